"""The servers under test: B0 (plain aiortc), F1 (finrtc, no hooks), F2 (finrtc, full chain),
and F1W2 / F2W2: the same configs as `finrtc serve --workers 2` (a front listener and two media
worker processes, each with its own GIL). F1 and F2 always run `--workers 1`, so the default
worker count (one per core) never changes their numbers.

Each measurement point starts a fresh server process pinned to its core(s), waits for /readyz,
and stops it afterwards, so RSS and CPU belong to that point alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from finrtc.config import parse_config
from finrtc.errors import ConfigError
from finrtc.hooks.loader import resolve_hook_class

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_F1_CONFIG = BENCH_DIR / "configs" / "f1_no_hooks.yaml"
DEFAULT_F2_CONFIG = BENCH_DIR / "configs" / "f2_full_chain.yaml"
READY_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 20.0
VARIANTS = ("B0", "F1", "F2", "F1W2", "F2W2")
# What a run measures when --variants is not given.
DEFAULT_VARIANTS = ("B0", "F1", "F2", "F2W2")
# finrtc variants: variant -> (config it uses, --workers).
FINRTC_VARIANTS = {"F1": ("F1", 1), "F2": ("F2", 1), "F1W2": ("F1", 2), "F2W2": ("F2", 2)}
# Several media workers only pay off with several rooms: the fan-out sweep (one room, one core)
# would measure one worker and an idle one, so these variants run in the calls sweep only.
CALLS_ONLY_VARIANTS = frozenset({"F1W2", "F2W2"})


def media_workers(variant: str) -> int:
    """Media worker processes of a variant (B0 and single-process finrtc: 1)."""
    return FINRTC_VARIANTS.get(variant, (variant, 1))[1]


def base_variant(variant: str) -> str:
    """The single-worker variant a multi-worker one is compared with (F2W2 -> F2)."""
    return FINRTC_VARIANTS.get(variant, (variant, 1))[0]


class BenchError(Exception):
    """The harness itself cannot go on (a server did not start, the load generator failed)."""


@dataclass(frozen=True)
class PreparedConfig:
    """A finrtc config file ready for `finrtc serve`, plus what was left out and why."""

    path: Path
    hooks: list[str]
    notes: list[str]


def loadable_hook_specs(path: Path) -> tuple[Any, list[str]]:
    """The config at `path` with the hooks this checkout cannot import removed (with notes)."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    config = parse_config(data, str(path))
    kept = []
    notes = []
    for spec in config.hooks:
        try:
            resolve_hook_class(spec.use, path.parent)
        except ConfigError as error:
            # A built-in name this checkout does not know or a module that does not import is a
            # hook that has not landed yet; anything else (a broken hook class) is a real error.
            missing = "cannot import hook module" in str(error) or str(error).startswith("unknown hook")
            if not missing:
                raise
            notes.append(f"hook {spec.use!r} skipped: not available in this checkout ({error})")
            continue
        kept.append(spec)
    return config.model_copy(update={"hooks": kept}), notes


def prepare_finrtc_config(source: Path, work_dir: Path, name: str) -> PreparedConfig:
    config, notes = loadable_hook_specs(source)
    with open(source, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    data["hooks"] = [spec.model_dump(exclude_defaults=True) | {"use": spec.use} for spec in config.hooks]
    target = work_dir / f"{name}.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return PreparedConfig(target, [spec.use for spec in config.hooks if spec.enabled], notes)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(command: list[str], cores: list[int] | None, nice: int = 0) -> list[str]:
    """`command` pinned to `cores` (taskset) and, on a shared machine, at another priority."""
    if nice:
        command = ["nice", "-n", str(nice), *command]
    if cores and shutil.which("taskset"):
        return ["taskset", "-c", ",".join(str(c) for c in cores), *command]
    return command


def finrtc_executable() -> list[str]:
    candidate = Path(sys.executable).parent / "finrtc"
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-m", "finrtc"]


class Server:
    """One server process under test."""

    def __init__(
        self,
        variant: str,
        work_dir: Path,
        secret: str,
        cores: list[int] | None,
        configs: dict[str, PreparedConfig],
        nice: int = 0,
    ) -> None:
        self.variant = variant
        self.workers = media_workers(variant)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.secret = secret
        self.log_path = work_dir / f"{variant}-{self.port}.log"
        env = dict(os.environ, FINRTC_API_SECRET=secret, PYTHONUNBUFFERED="1")
        if variant == "B0":
            command = [
                sys.executable,
                "-m",
                "benchmarks.baseline_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        else:
            data_dir = work_dir / f"data-{variant}-{self.port}"
            data_dir.mkdir(parents=True)
            # The archive needs its signer and archive keys where the default config looks.
            generated = subprocess.run(
                [*finrtc_executable(), "keys", "generate", "--out", str(data_dir / "keys")],
                cwd=REPO_DIR,
                capture_output=True,
                text=True,
                check=False,
            )
            if generated.returncode != 0:
                raise BenchError(f"finrtc keys generate failed: {generated.stderr.strip()}")
            config_name, workers = FINRTC_VARIANTS[variant]
            command = [
                *finrtc_executable(),
                "serve",
                "--workers",
                str(workers),
                "--config",
                str(configs[config_name].path),
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            pinned(command, cores, nice),
            cwd=REPO_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.variant} server exited with code {self.process.returncode} before it "
                    f"was ready; its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=1.0) as response:
                    if response.status == 200 and self._all_workers_ready(response.read()):
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise BenchError(
            f"{self.variant} server did not answer 200 on /readyz within {READY_TIMEOUT_S:.0f} s; "
            f"log ({self.log_path}):\n{self.log_tail()}"
        )

    def _all_workers_ready(self, body: bytes) -> bool:
        """A front listener answers ready once one worker is: a point that started then would
        put every call on that worker. Wait for all of them."""
        if self.workers == 1:
            return True
        try:
            workers = json.loads(body).get("workers") or {}
        except ValueError:
            return False
        return len(workers) == self.workers and all(state == "ready" for state in workers.values())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # The process group holds any worker processes the server started.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def new_secret() -> str:
    return secrets.token_urlsafe(48)
