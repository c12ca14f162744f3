"""Child process of the crash test: records a synthetic call until it is killed.

Usage: python crash_child.py KEYS_DIR ARCHIVE_DIR SESSION
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from finrtc.archive.keys import Signer, load_archive_public_key
from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.settings import ArchiveConfig
from finrtc.archive.storage import LocalStorage
from finrtc.model import MediaKind, Role, TrackInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.archive.synth import AudioSource, Call, VideoSource


async def main(keys_dir: Path, archive_dir: Path, session: str) -> None:
    call = Call(VideoSource("cam-1"), AudioSource("mic-1"))
    assert call.video is not None
    video = call.video
    recorder = SessionRecorder.create(
        ArchiveConfig(segment_seconds=0.5), archive_dir, "room-1", session, "default", None,
        Signer.from_file(keys_dir / "signer.key"),
        [load_archive_public_key(keys_dir / "archive.pub")],
        storage=LocalStorage(archive_dir),
        on_keyframe_needed=lambda _track: video.force_keyframe(),
    )
    recorder.add_track(TrackInfo("room-1", session, "a", Role.AGENT, "cam-1", MediaKind.VIDEO),
                       width=160, height=120)
    recorder.add_track(TrackInfo("room-1", session, "a", Role.AGENT, "mic-1", MediaKind.AUDIO))
    await recorder.start()
    print("started", flush=True)
    for count, packet in enumerate(call.packets(600.0)):
        recorder.offer(packet)
        if count % 5 == 0:
            # About 4x real time: the writer keeps sealing while the parent waits to kill us.
            await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
