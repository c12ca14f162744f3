"""The bounded decoded-frame hand-over, driven by aiortc's own decoder thread."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import decoder_worker

from finrtc.media import receive_queue
from finrtc.media.encoder import VideoEncoder
from finrtc.media.receive_queue import LatestFramesQueue
from tests.support.media import PatternVideoTrack

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def vp8_frames(count: int) -> list[JitterFrame]:
    source = PatternVideoTrack()
    encoder = VideoEncoder(800_000, 8, 1)
    packets = [bytes(p) for i in range(count) for p in encoder.encode(source.make_frame(i), i * 3000, i == 0)]
    return [JitterFrame(data, index * 3000) for index, data in enumerate(packets)]


async def test_a_stalled_event_loop_holds_only_the_newest_frames() -> None:
    drops: list[int] = []
    bounded = LatestFramesQueue(4, on_drop=lambda: drops.append(1))
    encoded: queue.Queue[object] = queue.Queue()
    for frame in vp8_frames(60):
        encoded.put((VP8, frame))
    encoded.put(None)
    decoder = threading.Thread(
        target=decoder_worker,
        args=(asyncio.get_running_loop(), encoded, bounded, threading.Event()),
        daemon=True,
    )
    decoder.start()
    # The event loop is busy while aiortc's thread decodes all 60 frames: with aiortc's own
    # queue, all 60 pictures would wait in pending callbacks.
    decoder.join(timeout=30)
    assert not decoder.is_alive()
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
        installed = receive_queue.install(transceiver.receiver, "video")
        assert transceiver.receiver.track._queue is installed
        installed.put_nowait("frame")
        assert await asyncio.wait_for(transceiver.receiver.track.recv(), 5) == "frame"
    finally:
        await sender.close()
        await receiver.close()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LatestFramesQueue(0)
