"""A real redis-server (Debian package, installed by `make test`) on 127.0.0.1 for the cluster
tests, and helpers to run finrtc nodes against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live_server import free_port


@dataclass(frozen=True)
class RedisServer:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        """redis-cli against this server (the tests read the directory as an operator would)."""
        result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args],
                                capture_output=True, text=True, timeout=10, check=True)
        return result.stdout.strip()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs the Debian package)")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    with (folder / "redis.log").open("w") as log_file:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--protected-mode", "yes"],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = RedisServer(port)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited: {(folder / 'redis.log').read_text()}")
        try:
            if server.cli("PING") == "PONG":
                break
        except subprocess.CalledProcessError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("redis-server did not answer PING within 20 s")
        time.sleep(0.1)
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (its media workers, for a front listener)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def worker_id_of(pid: int) -> int | None:
    """The --worker-id a media worker process was started with."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None
    if b"--worker-id" not in argv:
        return None
    return int(argv[argv.index(b"--worker-id") + 1])


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def loopback_client_candidates() -> None:
    """The test's own aiortc clients gather on 127.0.0.1 (aioice skips loopback by default, and
    no in-process server has pinned it when these tests run alone)."""
    from finrtc.media.aiortc_patches import pin_host_addresses

    pin_host_addresses(["127.0.0.1"])
