"""Fixtures of the archive tests: fresh key sets and recorded sessions made of real VP8/Opus."""

from __future__ import annotations

import argparse
import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey, PublicKey
from nacl.signing import VerifyKey

from finrtc.archive import cli as archive_cli
from finrtc.archive.keys import (
    KeyPaths,
    Signer,
    generate_keys,
    load_archive_private_key,
    load_archive_public_key,
    load_verify_key,
)
from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.settings import ArchiveConfig, RetentionClass
from finrtc.archive.storage import LocalStorage, Storage
from finrtc.model import EncodedPacket, MediaKind

from .synth import AudioSource, Call, VideoSource, track

ROOM = "room-1"


@dataclass
class Keys:
    paths: KeyPaths
    signer: Signer
    verify_key: VerifyKey
    archive_private: PrivateKey
    archive_public: PublicKey


def make_keys(directory: Path) -> Keys:
    paths = generate_keys(directory)
    return Keys(
        paths,
        Signer.from_file(paths.signer_key),
        load_verify_key(paths.signer_pub),
        load_archive_private_key(paths.archive_key),
        load_archive_public_key(paths.archive_pub),
    )


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys")


def archive_config(segment_seconds: float = 1.0, **extra: Any) -> ArchiveConfig:
    data: dict[str, Any] = {
        "segment_seconds": segment_seconds,
        "retention_classes": {"default": RetentionClass(days=1), "long": RetentionClass(days=3650)},
        # The sessions of these tests carry residency "eu".
        "region": "eu",
    }
    data.update(extra)
    return ArchiveConfig(**data)


def new_recorder(keys: Keys, storage: Storage, session: str, *, segment_seconds: float = 1.0,
                 retention_class: str = "default", call: Call | None = None,
                 **extra: Any) -> SessionRecorder:
    recorder = SessionRecorder.create(
        archive_config(segment_seconds, **extra), Path("/nonexistent"), ROOM, session,
        retention_class, "eu", keys.signer, [keys.archive_public], storage=storage,
        on_keyframe_needed=(lambda _track: call.video.force_keyframe())
        if call is not None and call.video is not None else None,
    )
    if call is not None:
        if call.video is not None:
            recorder.add_track(track(ROOM, session, call.video.track_id, MediaKind.VIDEO),
                               width=call.video.width, height=call.video.height)
        if call.audio is not None:
            recorder.add_track(track(ROOM, session, call.audio.track_id, MediaKind.AUDIO),
                               sample_rate=48_000, channels=call.audio.channels)
    return recorder


def av_call(video: bool = True, audio: bool = True, fps: int = 25) -> Call:
    return Call(VideoSource("cam-1", fps=fps) if video else None,
                AudioSource("mic-1") if audio else None)


def record_sync(keys: Keys, archive_dir: Path, session: str, seconds: float, *,
                video: bool = True, audio: bool = True,
                during: Callable[[SessionRecorder, EncodedPacket], None] | None = None,
                skip: Callable[[float], bool] | None = None,
                close: bool = True, **extra: Any) -> Path:
    """Record `seconds` of a synthetic call; returns the session folder.

    fsync is off here: these sessions test the chain, not power-loss durability (the async
    round trip and the crash child write through the durable path).
    """
    call = av_call(video, audio)
    storage = LocalStorage(archive_dir, durable=False)
    recorder = new_recorder(keys, storage, session, call=call, **extra)
    asyncio.run(recorder.start())
    for packet in call.packets(seconds, skip=skip):
        recorder.offer(packet)
        if during is not None:
            during(recorder, packet)
    if close:
        asyncio.run(recorder.close())
    return archive_dir / ROOM / session


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Keys, Path, Path]:
    """One 5-second A/V session and a second session (for swap tests), recorded once."""
    base = tmp_path_factory.mktemp("recorded")
    keys_ = make_keys(base / "keys")
    first = record_sync(keys_, base / "archive", "s-one", 5.0)
    second = record_sync(keys_, base / "archive", "s-two", 5.0)
    return keys_, first, second


@pytest.fixture
def session_copy(recorded: tuple[Keys, Path, Path], tmp_path: Path) -> tuple[Keys, Path, Path]:
    keys_, first, second = recorded
    target = tmp_path / "archive" / ROOM
    a = Path(shutil.copytree(first, target / first.name))
    b = Path(shutil.copytree(second, target / second.name))
    for folder in (a, b):
        for path in folder.rglob("*"):
            if path.is_file():
                path.chmod(0o640)
    return keys_, a, b


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="finrtc")
    subparsers = parser.add_subparsers(dest="command")
    subparsers.required = True
    archive_cli.register(subparsers)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def verify_args(keys: Keys, session: Path, *extra: str, content: bool = True) -> list[str]:
    argv = ["verify", str(session), "--signer-key", str(keys.paths.signer_pub), "--json", "--quiet"]
    if content:
        argv += ["--archive-key", str(keys.paths.archive_key)]
    return argv + list(extra)
