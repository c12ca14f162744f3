"""Native shims the interop tests compile with gcc for the GStreamer clients they start."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def _compile(source: str, output: Path, *flags: str) -> Path:
    compiler = shutil.which("gcc")
    assert compiler, "gcc is missing: `make system-deps` installs it (APT_PACKAGES)"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(output), str(SUPPORT / source), *flags],
        check=True,
    )
    return output


@pytest.fixture(scope="session")
def loopback_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("shim")
    return _compile("libnice_loopback_shim.c", directory / "libnice_loopback_shim.so", "-ldl")


@pytest.fixture(scope="session")
def gupnp_igd_stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a libgupnp-igd-1.0.so.4 to put first on LD_LIBRARY_PATH."""
    directory = tmp_path_factory.mktemp("gupnp-igd-stub")
    _compile("gupnp_igd_stub.c", directory / "libgupnp-igd-1.0.so.4", "-Wl,-soname,libgupnp-igd-1.0.so.4")
    return directory
