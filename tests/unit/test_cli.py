"""The `finrtc` command as an operator uses it (real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from finrtc import cli
from finrtc.auth import verify_token
from finrtc.model import Role

SECRET = "c" * 40


def finrtc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finrtc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_broken_yaml_is_a_clear_cli_error(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("server:\n  port: [8080\n")
    result = finrtc("serve", "--config", str(config), env={"FINRTC_API_SECRET": SECRET})
    assert result.returncode == 2
    assert "not valid YAML at line" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("media:\n  video:\n    bitrate: 100\n")
    result = finrtc("serve", "--config", str(config), env={"FINRTC_API_SECRET": SECRET})
    assert result.returncode == 2
    assert "media.video.bitrate: unknown key" in result.stderr


def test_token_command_prints_a_valid_token(tmp_path: Path) -> None:
    result = finrtc(
        "token",
        "--room",
        "sale-1",
        "--identity",
        "agent-7",
        "--role",
        "agent",
        "--ttl",
        "120",
        env={"FINRTC_API_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    grant = verify_token(result.stdout.strip(), SECRET)
    assert (grant.room, grant.identity, grant.role) == ("sale-1", "agent-7", Role.AGENT)


def test_token_command_rejects_bad_identity() -> None:
    result = finrtc(
        "token", "--room", "r", "--identity", "bad name", "--role", "agent", env={"FINRTC_API_SECRET": SECRET}
    )
    assert result.returncode == 2 and "invalid identity" in result.stderr


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS starts no extra threads on one core")
@pytest.mark.parametrize("limited", [True, False])
def test_the_cli_keeps_blas_from_spawning_worker_threads(limited: bool) -> None:
    code = (
        "import os, sys\n"
        "from finrtc import cli\n"
        "if sys.argv[1] == 'limited':\n"
        "    cli.limit_native_threads()\n"
        "import numpy as np\n"
        "a = np.ones((400, 400), dtype=np.float32)\n"
        "for _ in range(5):\n"
        "    a @ a\n"
        "print(len(os.listdir('/proc/self/task')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in cli.SINGLE_THREAD_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code, "limited" if limited else "default"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )
    threads = int(done.stdout.strip())
    # Without the limit OpenBLAS adds a worker per extra core; the control run proves the
    # measurement can see them.
    assert (threads == 1) if limited else (threads > 1)
