"""The pipeline writes into VP8-decoded frames in place; this proves that is safe."""

from __future__ import annotations

import numpy as np
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.jitterbuffer import JitterFrame

from finrtc.media.encoder import VideoEncoder
from finrtc.media.pipeline import copy_video_frame, plane_views
from tests.support.media import PatternVideoTrack


def decode_all(packets: list[bytes], mutate: bool) -> list[np.ndarray]:
    decoder = Vp8Decoder()
    outputs = []
    for index, data in enumerate(packets):
        for frame in decoder.decode(JitterFrame(data, index * 3000)):
            y, _, _ = plane_views(frame)
            outputs.append(y.copy())
            if mutate:
                y[100:300, 100:400] = 0
    return outputs


def test_writing_into_libvpx_frames_does_not_corrupt_later_frames() -> None:
    source = PatternVideoTrack()
    encoder = VideoEncoder(800_000, 8, 1)
    packets = [bytes(p) for i in range(30) for p in encoder.encode(source.make_frame(i), i * 3000, i == 0)]
    clean = decode_all(packets, mutate=False)
    mutated = decode_all(packets, mutate=True)
    assert len(clean) == len(mutated) == 30
    assert all(np.array_equal(a, b) for a, b in zip(clean, mutated, strict=True))


def test_copy_video_frame_is_independent() -> None:
    frame = PatternVideoTrack().make_frame(0)
    copy = copy_video_frame(frame)
    plane_views(copy)[0][:] = 0
    assert plane_views(frame)[0].max() > 0
