from __future__ import annotations

import asyncio

import av

from finrtc.events import EventLog
from finrtc.media.forwarder import ForwardedTrack
from finrtc.model import MediaKind, Role


async def test_resume_cursor_replays_missed_events() -> None:
    log = EventLog("r", window=5)
    for index in range(3):
        log.publish("tick", {"i": index})
    subscription, complete = log.subscribe(Role.AGENT, after=1)
    assert complete
    assert [subscription.queue.get_nowait().data["i"] for _ in range(2)] == [1, 2]
    for index in range(10):
        log.publish("tick", {"i": index})
    late, complete = log.subscribe(Role.AGENT, after=1)
    assert not complete  # the window moved on: the client is told it missed events
    assert late.queue.qsize() == 5


async def test_audience_filters_roles() -> None:
    log = EventLog("r")
    customer, _ = log.subscribe(Role.CUSTOMER)
    agent, _ = log.subscribe(Role.AGENT)
    log.publish("alert", {}, audience=[Role.AGENT])
    log.publish("joined", {})
    assert customer.queue.qsize() == 1 and agent.queue.qsize() == 2


async def test_threadsafe_publish_arrives_on_the_loop() -> None:
    log = EventLog("r")
    log.bind_loop(asyncio.get_running_loop())
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: log.publish_threadsafe("from_thread", {"x": 1})
    )
    await asyncio.sleep(0.01)
    assert [e.type for e in log.history()] == ["from_thread"]


def packet() -> av.Packet:
    return av.Packet(b"\x00" * 10)


async def test_slow_video_subscriber_skips_to_next_keyframe_and_stays_bounded() -> None:
    requests: list[str] = []
    track = ForwardedTrack(MediaKind.VIDEO, max_packets=4, request_keyframe=requests.append)
    track.offer(packet(), keyframe=False)
    assert track.queued == 0  # cannot start mid-GOP
    track.offer(packet(), keyframe=True)
    for _ in range(10):
        track.offer(packet(), keyframe=False)
    assert track.queued == 0 and track.waiting_for_keyframe
    assert requests == ["subscriber_overflow"]
    for _ in range(5):
        track.offer(packet(), keyframe=False)
    assert track.queued == 0
    track.offer(packet(), keyframe=True)
    assert track.queued == 1 and not track.waiting_for_keyframe
    assert track.dropped >= 14


async def test_audio_subscriber_drops_oldest() -> None:
    track = ForwardedTrack(MediaKind.AUDIO, max_packets=3)
    packets = [av.Packet(bytes([i])) for i in range(5)]
    for item in packets:
        track.offer(item, keyframe=True)
    assert track.queued == 3
    assert bytes(await track.recv()) == bytes([2])
    track.end()
    assert track.queued == 1
