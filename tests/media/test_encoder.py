"""The shared audio encoder's input stage: session-clock stamping and the resampler bypass."""

from __future__ import annotations

import av
import numpy as np

from finrtc.media.encoder import AUDIO_FRAME_SAMPLES, AUDIO_RATE, AudioEncoder


def audio_frame(layout: str, rate: int, samples: int, value: int) -> av.AudioFrame:
    channels = 2 if layout == "stereo" else 1
    data = np.full((1, samples * channels), value, dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
    frame.sample_rate = rate
    return frame


def test_decoder_shaped_frames_skip_the_resampler_and_keep_their_samples() -> None:
    encoder = AudioEncoder(32_000)
    prepared = []
    for index in range(5):
        frame = audio_frame("stereo", AUDIO_RATE, AUDIO_FRAME_SAMPLES, 100 + index)
        out = encoder.prepare(frame, index * AUDIO_FRAME_SAMPLES)
        assert out == [frame]  # the very frame, not a copy
        prepared += out
    assert [frame.pts for frame in prepared] == [i * AUDIO_FRAME_SAMPLES for i in range(5)]
    first = prepared[0].to_ndarray()
    assert first.shape == (1, 2 * AUDIO_FRAME_SAMPLES) and int(first[0, 0]) == 100
    packets = [packet for frame in prepared for packet in encoder.encode_prepared(frame)]
    assert packets and all(packet.time_base.denominator == AUDIO_RATE for packet in packets)


def test_other_shapes_go_through_the_resampler_from_then_on() -> None:
    encoder = AudioEncoder(32_000)
    out = []
    for index in range(5):  # 20 ms of 16 kHz mono each
        out += encoder.prepare(audio_frame("mono", 16_000, 320, 7), index * AUDIO_FRAME_SAMPLES)
    assert len(out) >= 3
    assert all(frame.samples == AUDIO_FRAME_SAMPLES for frame in out)
    assert all(frame.sample_rate == AUDIO_RATE and frame.layout.name == "stereo" for frame in out)
    # A decoder-shaped frame now queues behind the resampler's buffer instead of overtaking it.
    native = audio_frame("stereo", AUDIO_RATE, AUDIO_FRAME_SAMPLES, 9)
    later = encoder.prepare(native, 5 * AUDIO_FRAME_SAMPLES)
    assert all(frame is not native for frame in later)
    assert [frame.pts for frame in out + later] == [
        i * AUDIO_FRAME_SAMPLES for i in range(len(out + later))
    ]
