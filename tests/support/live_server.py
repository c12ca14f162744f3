"""A real `finrtc serve` process on 127.0.0.1, for tests that fuzz it or measure its RSS and fds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIVE_SECRET = "live-secret-" + "s" * 40
LIVE_API_KEY = "fuzz-backend"
LIVE_API_KEY_SECRET = "fuzz-api-key-secret-" + "k" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class LiveServer:
    process: subprocess.Popen[str]
    base: str
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident set size of the server process, from /proc (VmRSS is in kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for process {self.pid}")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_healthy(process: subprocess.Popen[str], base: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise AssertionError(f"finrtc serve exited ({process.returncode}): {log_path.read_text()}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"finrtc serve was not ready within {timeout_s:.0f} s")
        time.sleep(0.2)


@contextmanager
def live_server(root: Path, **sections: Any) -> Iterator[LiveServer]:
    """Run `python -m finrtc serve` with a config of `sections` (merged over a loopback-only base
    with one API key, no archive, no hooks); stop it with SIGTERM afterwards."""
    port = free_port()
    config: dict[str, Any] = {
        "data_dir": str(root / "data"),
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "auth": {"api_keys": {LIVE_API_KEY: LIVE_API_KEY_SECRET}},
        "archive": {"enabled": False},
        "compliance": {"enabled": False},
        "hooks": [],
        "logging": {"level": "warning", "format": "text"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    config_path = root / "finrtc.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log_path = root / "server.log"
    env = {**os.environ, "FINRTC_API_SECRET": LIVE_SECRET}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "finrtc", "serve", "--config", str(config_path)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, base, log_path, 60)
        yield LiveServer(process, base, port, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
