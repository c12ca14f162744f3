"""Integration surface: dev keys + config storage, hook events, storage failures, progress."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from finrtc.archive import cli as archive_cli
from finrtc.archive.keys import Signer, ensure_dev_keys, load_archive_public_key
from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.settings import ArchiveConfig
from finrtc.archive.storage import LocalStorage
from finrtc.archive.targets import storage_from_config
from finrtc.errors import ArchiveError
from finrtc.hooks.contract import HookEvent
from finrtc.model import MediaKind, Severity

from .conftest import ROOM, Keys, av_call, new_recorder, record_sync, run_cli, verify_args
from .synth import track


async def test_dev_keys_config_storage_and_hook_events(tmp_path: Path, capsys: Any) -> None:
    data_dir = tmp_path / "data"
    paths = ensure_dev_keys(data_dir / "keys")
    assert ensure_dev_keys(data_dir / "keys").signer_key.read_bytes() == \
        paths.signer_key.read_bytes()
    config = ArchiveConfig(segment_seconds=1.0)
    call = av_call()
    assert call.video is not None and call.audio is not None
    video = call.video
    recorder = SessionRecorder.create(
        config, data_dir, ROOM, "dev-1", "default", None, Signer.from_file(paths.signer_key),
        [load_archive_public_key(paths.archive_pub)],
        storage=storage_from_config(config, data_dir),
        on_keyframe_needed=lambda _t: video.force_keyframe(),
    )
    cam = track(ROOM, "dev-1", "cam-1", MediaKind.VIDEO)
    # No size given: the recorder reads it from the first VP8 keyframe.
    recorder.add_track(cam)
    recorder.add_track(track(ROOM, "dev-1", "mic-1", MediaKind.AUDIO))
    await recorder.start()
    for packet in call.packets(2.0):
        recorder.offer(packet)
        if packet.sequence == 30 and packet.track_id == "cam-1":
            recorder.record_hook_event(HookEvent("face_lost", "face_presence", cam, 0.2,
                                                 Severity.ALERT, {"seconds": 1.5}), 1.2)
    await recorder.close()
    session = data_dir / "archive" / ROOM / "dev-1"
    argv = ["verify", str(session), "--signer-key", str(paths.signer_pub),
            "--archive-key", str(paths.archive_key), "--json", "--quiet"]
    assert run_cli(argv) == 0
    report = json.loads(capsys.readouterr().out)
    face = [f for f in report["findings"] if f["code"] == "event:face_lost"]
    assert face and face[0]["segment"] == 1 and face[0]["media_time"] == 1.2
    final = json.loads((session / "final.json").read_text())["body"]
    assert (final["tracks"]["cam-1"]["width"], final["tracks"]["cam-1"]["height"]) == (160, 120)


class FlakyStorage(LocalStorage):
    """A real folder that fails once, like a full disk, when segment 2 is written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failed = False

    def put(self, key: str, data: bytes, *, retain_until: Any = None) -> None:
        if key.endswith("segments/000002.seg") and not self.failed:
            self.failed = True
            raise ArchiveError("cannot write: No space left on device")
        super().put(key, data, retain_until=retain_until)


def test_storage_failure_is_sealed(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    call = av_call()
    storage = FlakyStorage(tmp_path / "archive")
    recorder = new_recorder(keys, storage, "flaky", call=call)
    asyncio.run(recorder.start())
    for packet in call.packets(5.0):
        recorder.offer(packet)
    asyncio.run(recorder.close())
    assert storage.failed
    session = tmp_path / "archive" / ROOM / "flaky"
    final = json.loads((session / "final.json").read_text())["body"]
    assert final["compromised"] and "No space left" in final["compromise_reasons"][0]
    assert run_cli(verify_args(keys, session, "--max-gap", "0.5")) == 0
    report = json.loads(capsys.readouterr().out)
    codes = {f["code"] for f in report["findings"]}
    # The lost second of media is a gap, explained by the sealed failure event.
    assert {"recording_compromised", "event:archive_write_failed", "gap"} <= codes
    assert "unexplained_gap" not in codes


def test_non_increasing_pts_is_sealed_not_fatal(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    call = av_call()
    recorder = new_recorder(keys, LocalStorage(tmp_path / "archive"), "pts", call=call)
    asyncio.run(recorder.start())
    for packet in call.packets(2.0):
        recorder.offer(packet)
        if packet.track_id == "mic-1" and packet.sequence == 10:
            recorder.offer(dataclasses.replace(packet, sequence=999))
    asyncio.run(recorder.close())
    session = tmp_path / "archive" / ROOM / "pts"
    assert run_cli(verify_args(keys, session)) == 0
    report = json.loads(capsys.readouterr().out)
    assert any(f["code"] == "event:packet_not_archived" for f in report["findings"])


def test_progress_on_long_archives(keys: Keys, tmp_path: Path, capsys: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    session = record_sync(keys, tmp_path / "archive", "long", 4.0)
    monkeypatch.setattr(archive_cli, "PROGRESS_MIN_SEGMENTS", 3)
    argv = [a for a in verify_args(keys, session) if a != "--quiet"]
    assert run_cli(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"verifying: (\d+)/\1 segments", err), err
