"""Crash: SIGKILL a recording process mid-session; every sealed segment still verifies, the
session is reported interrupted with the time of the last sealed media, and nothing
half-written passes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .conftest import Keys, run_cli, verify_args

CHILD = Path(__file__).with_name("crash_child.py")


def test_sigkill_mid_session(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    archive = tmp_path / "archive"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(keys.paths.signer_key.parent), str(archive), "crash"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    records = archive / "room-1" / "crash" / "records"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if records.is_dir() and len(list(records.glob("*.json"))) >= 4:
                break
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            time.sleep(0.02)
        else:
            raise AssertionError("the child sealed no segments in time")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    session = archive / "room-1" / "crash"
    assert not (session / "final.json").exists()

    assert run_cli(verify_args(keys, session)) == 2
    report = json.loads(capsys.readouterr().out)
    sealed = sorted(records.glob("*.json"))
    assert report["status"] == "interrupted"
    assert report["segments_valid"] == report["segments_total"] == len(sealed) >= 4
    last_end = json.loads(sealed[-1].read_text())["body"]["media_end"]
    assert report["last_sealed_media_time"] == last_end
    interrupted = [f for f in report["findings"] if f["code"] == "no_final_record"]
    assert interrupted and interrupted[0]["media_time"] == last_end
    assert f"t={last_end:.3f}s" in interrupted[0]["message"]
    assert not [f for f in report["findings"] if f["severity"] == "error"]

    # Leftovers of an interrupted write are reported and never counted as sealed.
    next_index = len(sealed)
    (session / "segments" / f"{next_index:06d}.seg.tmp-deadbeef").write_bytes(b"\x00" * 100)
    if not (session / "segments" / f"{next_index:06d}.seg").exists():
        shutil.copy(session / "segments" / "000000.seg",
                    session / "segments" / f"{next_index:06d}.seg")
    assert run_cli(verify_args(keys, session)) == 2
    report = json.loads(capsys.readouterr().out)
    codes = {f["code"] for f in report["findings"]}
    assert {"half_written_file", "unsealed_segment"} <= codes
    assert report["segments_valid"] == len(sealed)

    # A record cut short (as a non-atomic writer would leave it) fails outright.
    (session / "records" / f"{next_index:06d}.json").write_bytes(sealed[-1].read_bytes()[:150])
    assert run_cli(verify_args(keys, session)) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(f["code"] == "record_unreadable" and f["segment"] == next_index
               for f in report["findings"])
