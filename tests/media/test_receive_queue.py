"""The bounded hand-overs around aiortc's decoder thread, driven by aiortc's own decoder worker."""

from __future__ import annotations

import asyncio
import fractions
import queue
import threading
import time
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import decoder_worker

from finrtc.media import receive_queue
from finrtc.media.encoder import H264Encoder, VideoEncoder
from finrtc.media.receive_queue import EncodedFrameQueue, LatestFramesQueue
from tests.support.media import PatternVideoTrack

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(
    mimeType="video/H264", clockRate=90000, payloadType=102,
    parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


def vp8_frames(
    count: int, keyframes: frozenset[int] = frozenset({0}), encoder_type: type[VideoEncoder] = VideoEncoder
) -> list[JitterFrame]:
    source = PatternVideoTrack()
    encoder = encoder_type(800_000, 8, 1)
    packets = [
        bytes(p)
        for i in range(count)
        for p in encoder.encode(source.make_frame(i), i * 3000, i == 0 or i in keyframes)
    ]
    return [JitterFrame(data, index * 3000) for index, data in enumerate(packets)]


def start_decoder(
    encoded: Any, decoded: LatestFramesQueue, decode_error: threading.Event | None = None
) -> threading.Thread:
    """aiortc's own decoder worker between the two queues (call from the event loop); it sets
    `decode_error` when a frame fails to decode."""
    worker = threading.Thread(
        target=decoder_worker,
        args=(asyncio.get_running_loop(), encoded, decoded, decode_error or threading.Event()),
        daemon=True,
    )
    worker.start()
    return worker


def finished(worker: threading.Thread) -> None:
    worker.join(timeout=30)
    assert not worker.is_alive()


def decoded_frames(decoded: LatestFramesQueue) -> list[Any]:
    return [frame for frame in decoded._items if frame is not None]


async def test_a_stalled_event_loop_holds_only_the_newest_frames() -> None:
    drops: list[int] = []
    bounded = LatestFramesQueue(4, on_drop=lambda: drops.append(1))
    encoded: queue.Queue[object] = queue.Queue()
    for frame in vp8_frames(60):
        encoded.put((VP8, frame))
    encoded.put(None)
    # The event loop is busy while aiortc's thread decodes all 60 frames: with aiortc's own
    # queue, all 60 pictures would wait in pending callbacks.
    finished(start_decoder(encoded, bounded))
    received = []
    while True:
        frame = await asyncio.wait_for(bounded.get(), 5)
        if frame is None:
            break
        received.append(frame)
    assert isinstance(received[0], av.VideoFrame)
    # The newest frames survive, in order; the end-of-stream marker is never dropped.
    assert [frame.pts for frame in received] == [i * 3000 for i in range(56, 60)]
    assert bounded.dropped == len(drops) == 56


async def test_a_waiting_reader_is_woken_by_the_decoder_thread() -> None:
    bounded = LatestFramesQueue(4)
    loop = asyncio.get_running_loop()
    waiter = asyncio.ensure_future(bounded.get())
    await asyncio.sleep(0.05)
    assert not waiter.done()

    def produce() -> None:
        time.sleep(0.05)
        asyncio.run_coroutine_threadsafe(bounded.put("frame"), loop)

    threading.Thread(target=produce).start()
    assert await asyncio.wait_for(waiter, 5) == "frame"
    assert bounded.dropped == 0 and bounded.empty()


async def test_install_bounds_a_real_receiver_track() -> None:
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender.addTrack(PatternVideoTrack())
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        transceiver = receiver.getTransceivers()[0]
        encoded, installed = receive_queue.install(transceiver.receiver, "video")
        assert transceiver.receiver.track._queue is installed
        assert transceiver.receiver._RTCRtpReceiver__decoder_queue is encoded
        installed.put_nowait("frame")
        assert await asyncio.wait_for(transceiver.receiver.track.recv(), 5) == "frame"
    finally:
        await sender.close()
        await receiver.close()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LatestFramesQueue(0)


async def test_a_starved_decoder_skips_to_the_newest_keyframe() -> None:
    drops: list[int] = []
    pli = threading.Event()
    encoded = EncodedFrameQueue("video", pli, drops.append, backlog=6)
    # 20 frames arrived while the decoder thread had no CPU; keyframes at 0 and 12.
    for frame in vp8_frames(20, keyframes=frozenset({12})):
        encoded.put((VP8, frame))
    encoded.put(None)
    decoded = LatestFramesQueue(1000)
    decode_error = threading.Event()
    finished(start_decoder(encoded, decoded, decode_error))
    # Decoding starts at the newest keyframe and goes on through the frames that depend on it
    # (they are not shed again although they still exceed the backlog); no decode errors.
    assert [frame.pts for frame in decoded_frames(decoded)] == [i * 3000 for i in range(12, 20)]
    assert encoded.dropped == sum(drops) == 12
    assert not pli.is_set() and not decode_error.is_set()


async def test_a_backlog_without_keyframe_is_dropped_until_the_requested_keyframe() -> None:
    drops: list[int] = []
    pli = threading.Event()
    encoded = EncodedFrameQueue("video", pli, drops.append, backlog=6)
    frames = vp8_frames(30, keyframes=frozenset({25}))
    # The decoder thread fell 10 delta frames behind (its keyframe was long decoded).
    for frame in frames[1:11]:
        encoded.put((VP8, frame))
    decoded = LatestFramesQueue(1000)
    decode_error = threading.Event()
    worker = start_decoder(encoded, decoded, decode_error)
    # It drops them all and has the receiver ask the publisher for a keyframe (PLI).
    assert await asyncio.to_thread(pli.wait, 10)
    assert encoded.dropped == 10 and encoded.qsize() == 0
    # Deltas that were already on their way go too, one by one; then the keyframe decodes.
    for frame in frames[11:30]:
        encoded.put((VP8, frame))
        await asyncio.sleep(0.002)
    encoded.put(None)
    finished(worker)
    pts = [frame.pts for frame in decoded_frames(decoded)]
    # A delta frame without its references would decode to a corrupt picture.
    assert pts == [i * 3000 for i in range(25, 30)]
    assert encoded.dropped == sum(drops) == 24 and not decode_error.is_set()


async def test_a_decoder_keeping_up_loses_nothing() -> None:
    encoded = EncodedFrameQueue("video", threading.Event(), backlog=6)
    decoded = LatestFramesQueue(1000)
    worker = start_decoder(encoded, decoded)
    for frame in vp8_frames(40):
        encoded.put((VP8, frame))
        await asyncio.sleep(0.002)
    encoded.put(None)
    finished(worker)
    assert encoded.dropped == 0
    assert decoded.qsize() == 41  # 40 pictures and the end marker


async def test_audio_keeps_the_newest_frames_and_tags_each_with_its_payload() -> None:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "stereo", "s16"
    encoder.time_base = fractions.Fraction(1, 48000)
    encoder.open()
    payloads = []
    noise = np.random.default_rng(7).integers(-8000, 8000, (12, 1, 1920), dtype=np.int16)
    for index in range(12):
        frame = av.AudioFrame.from_ndarray(noise[index], format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, index * 960
        payloads.extend(bytes(packet) for packet in encoder.encode(frame))
    drops: list[int] = []
    encoded = EncodedFrameQueue("audio", on_drop=drops.append, backlog=5)
    for index, payload in enumerate(payloads):
        encoded.put((OPUS, JitterFrame(payload, index * 960)))
    encoded.put(None)
    decoded = LatestFramesQueue(100, encoded=encoded)
    finished(start_decoder(encoded, decoded))
    frames = decoded_frames(decoded)
    assert sum(drops) == encoded.dropped == len(payloads) - 5
    # Each decoded frame carries the exact packet it came from: the newest five.
    assert len(set(payloads)) == len(payloads)
    assert [frame.opaque for frame in frames] == payloads[-5:]


def test_backlog_must_be_positive() -> None:
    with pytest.raises(ValueError, match="backlog"):
        EncodedFrameQueue("video", backlog=0)


async def test_a_starved_h264_decoder_skips_to_the_newest_idr() -> None:
    # The same shedding as VP8, with H.264's keyframe test (an IDR NAL unit in the access unit).
    frames = vp8_frames(20, keyframes=frozenset({12}), encoder_type=H264Encoder)
    assert [receive_queue.is_keyframe((H264, f)) for f in frames].count(True) == 2
    encoded = EncodedFrameQueue("video", threading.Event(), backlog=6)
    for frame in frames:
        encoded.put((H264, frame))
    encoded.put(None)
    decoded = LatestFramesQueue(1000)
    decode_error = threading.Event()
    finished(start_decoder(encoded, decoded, decode_error))
    assert [frame.pts for frame in decoded_frames(decoded)] == [i * 3000 for i in range(12, 20)]
    assert encoded.dropped == 12 and not decode_error.is_set()


async def test_an_empty_frame_never_reaches_the_decoder() -> None:
    # Padding-only packets make an empty "frame"; PyAV would take it for end of stream and the
    # decoder would fail every later frame with EOF (seen with Chromium publishing H.264).
    frames = vp8_frames(10, encoder_type=H264Encoder)
    encoded = EncodedFrameQueue("video", threading.Event(), backlog=100)
    for index, frame in enumerate(frames):
        encoded.put((H264, frame))
        if index == 3:
            encoded.put((H264, JitterFrame(b"", frame.timestamp)))
    encoded.put(None)
    decoded = LatestFramesQueue(1000)
    decode_error = threading.Event()
    finished(start_decoder(encoded, decoded, decode_error))
    assert len(decoded_frames(decoded)) == 10 and not decode_error.is_set()
