"""The hook kit: the contract helper catches broken hooks, and the examples load from YAML."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from finrtc.config import HookSpec
from finrtc.errors import ConfigError
from finrtc.hooks.builtin.visible_watermark import VisibleWatermark
from finrtc.hooks.chain import HookChain
from finrtc.hooks.contract import AudioChunk, FailurePolicy, Hook, Stage, VideoFrame
from finrtc.hooks.loader import load_hooks
from finrtc.hooks.testing import (
    HookContractViolation,
    check_hook,
    make_track,
    pattern_picture,
    video_frame,
    video_from_image,
)
from finrtc.model import EncodedPacket, MediaKind

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_YAML = """
hooks:
  - use: hooks/frame_counter.py:FrameCounter
    options: {every: 30}
  - use: hooks/region_blur.py:RegionBlur
    options: {left: 0.5, top: 0.0, width: 0.5, height: 0.5, block: 16}
"""


def load_examples() -> list:
    specs = [HookSpec.model_validate(item) for item in yaml.safe_load(EXAMPLES_YAML)["hooks"]]
    return load_hooks(specs, base_dir=REPO)


def test_examples_load_from_yaml_by_file_path_and_pass_the_helper() -> None:
    factories = load_examples()
    assert [factory.name for factory in factories] == ["frame_counter", "region_blur"]
    counter = check_hook(factories[0].hook_class, {"every": 30})
    assert "frames_counted" in counter.event_types()
    assert set(counter.timings) >= {"video 640x480", "audio 48000 Hz x2 20 ms"}
    check_hook(factories[1].hook_class, {"left": 0.5, "top": 0.0, "width": 0.5, "height": 0.5})


def test_examples_run_in_a_real_chain() -> None:
    factories = load_examples()
    events: list = []
    chain = HookChain(make_track(MediaKind.VIDEO), factories, events.append)
    frames = video_from_image(pattern_picture(), 640, 480, 30)
    before = frames[0][0].copy()
    for index, planes in enumerate(frames):
        chain.run_video(video_frame(planes, index))
    chain.close()
    assert chain.compromised_reason is None
    assert [event.type for event in events] == ["frames_counted"]
    # The blurred quadrant is made of flat 16x16 blocks now; the rest is untouched noise + picture.
    y = frames[0][0]
    block = y[0:16, 320:336]
    assert np.all(block == block[0, 0])
    assert np.array_equal(y[240:, :320], before[240:, :320])


def test_examples_load_by_module_path_from_the_repository_root() -> None:
    code = (
        "from finrtc.config import HookSpec\n"
        "from finrtc.hooks.loader import load_hooks\n"
        "print([f.name for f in load_hooks([HookSpec(use='hooks.frame_counter:FrameCounter')])])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['frame_counter']"


def test_bad_example_options_are_config_errors_with_the_path() -> None:
    spec = HookSpec(use="hooks/region_blur.py:RegionBlur", options={"left": 0.8, "top": 0, "width": 0.5,
                                                                       "height": 0.1})
    with pytest.raises(ConfigError, match=r"hooks\[0\]"):
        load_hooks([spec], base_dir=REPO)


def test_visible_watermark_passes_the_helper() -> None:
    check_hook(VisibleWatermark, {}, budget_tolerance=2.0)


# Deliberately broken hooks: the helper must catch each one.


class _Base(Hook):
    name = "broken"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.MUTATE
    failure_policy = FailurePolicy.FAIL_OPEN
    budget_ms = 5.0


class ReplacesPlane(_Base):
    def process_video(self, frame: VideoFrame) -> None:
        frame.y = frame.y.copy()


class ChangesTime(_Base):
    def process_video(self, frame: VideoFrame) -> None:
        frame.media_time += 1.0


class Raises(_Base):
    def process_video(self, frame: VideoFrame) -> None:
        if frame.index == 50:
            raise RuntimeError("boom")


class ObserverWrites(_Base):
    stage = Stage.OBSERVE

    def process_video(self, frame: VideoFrame) -> None:
        frame.y[0, 0] = 1


class TooSlow(_Base):
    budget_ms = 0.5

    def process_video(self, frame: VideoFrame) -> None:
        # Busy work: about 3 ms of CPU per call.
        deadline = time.thread_time() + 0.003
        while time.thread_time() < deadline:
            pass


class Blocks(_Base):
    budget_ms = 0.5

    def process_video(self, frame: VideoFrame) -> None:
        time.sleep(0.003)


class BadEvent(_Base):
    def process_video(self, frame: VideoFrame) -> None:
        self.context.emit("Bad Event", frame.media_time, {"x": object()})


class FutureEvent(_Base):
    def process_video(self, frame: VideoFrame) -> None:
        self.context.emit("early", frame.media_time + 100.0)


class Undeclared(Hook):
    name = "undeclared"
    kinds: ClassVar[frozenset[MediaKind]] = frozenset()
    stage = Stage.MUTATE


class AudioReplaces(_Base):
    kinds = frozenset({MediaKind.AUDIO})

    def process_audio(self, chunk: AudioChunk) -> None:
        chunk.samples = chunk.samples[:10]


class PacketRaises(_Base):
    stage = Stage.POST_ENCODE

    def process_packet(self, packet: EncodedPacket) -> None:
        if packet.keyframe and packet.sequence > 0:
            raise ValueError("unexpected keyframe")
        len(packet.data)


class StrictOptions(BaseModel):
    level: int


class NeedsOptions(_Base):
    options_model = StrictOptions

    def process_video(self, frame: VideoFrame) -> None:
        pass


@pytest.mark.parametrize(
    ("hook_class", "message"),
    [
        (ReplacesPlane, "in place"),
        (ChangesTime, "media_time"),
        (Raises, "boom"),
        (ObserverWrites, "exception escaped"),
        (TooSlow, "exceeds the budget"),
        (Blocks, "must not block"),
        (BadEvent, "snake_case"),
        (FutureEvent, "not a time of the media"),
        (Undeclared, "must declare"),
        (AudioReplaces, "in place"),
        (NeedsOptions, "options do not validate"),
    ],
)
def test_helper_catches_broken_hooks(hook_class: type[Hook], message: str) -> None:
    with pytest.raises(HookContractViolation, match=message):
        check_hook(hook_class, {})


def test_helper_feeds_real_packets_to_post_encode_hooks() -> None:
    seen: list[EncodedPacket] = []

    class Collects(_Base):
        stage = Stage.POST_ENCODE
        kinds = frozenset({MediaKind.VIDEO, MediaKind.AUDIO})

        def process_packet(self, packet: EncodedPacket) -> None:
            seen.append(packet)

    report = check_hook(Collects, {})
    assert report.calls > 0
    video = [p for p in seen if p.kind is MediaKind.VIDEO]
    audio = [p for p in seen if p.kind is MediaKind.AUDIO]
    assert video[0].keyframe and video[0].data[:1] and len(video) >= 25
    assert len(audio) >= 25 and audio[0].time_base == (1, 48000)


async def test_planes_video_track_plays_and_switches_scenes() -> None:
    from finrtc.hooks.testing import PlanesVideoTrack

    first = video_from_image(pattern_picture(), 320, 240, 2)
    second = [(np.zeros_like(first[0][0]), first[0][1], first[0][2])]
    track = PlanesVideoTrack(first)
    frames = [await track.recv() for _ in range(3)]
    assert [f.pts for f in frames] == [0, 3000, 6000]
    assert np.array_equal(frames[1].to_ndarray()[:240], first[1][0])
    track.show(second)
    assert int((await track.recv()).to_ndarray()[:240].max()) == 0
    track.stop()
