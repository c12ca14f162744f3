from __future__ import annotations

from aiortc.rtp import RtpPacket

from finrtc.media.aiortc_patches import MarkerJitterBuffer


def packet(seq: int, timestamp: int, marker: bool, data: bytes) -> RtpPacket:
    item = RtpPacket(sequence_number=seq, timestamp=timestamp, marker=int(marker))
    item._data = data
    return item


def test_frame_is_released_on_its_marker_packet() -> None:
    buffer = MarkerJitterBuffer()
    assert buffer.add(packet(10, 3000, False, b"ab"))[1] is None
    frame = buffer.add(packet(11, 3000, True, b"cd"))[1]
    assert frame is not None and frame.data == b"abcd" and frame.timestamp == 3000
    # The next frame starts cleanly and is released on its own marker too.
    assert buffer.add(packet(12, 6000, True, b"ef"))[1].data == b"ef"


def test_incomplete_frames_wait() -> None:
    buffer = MarkerJitterBuffer()
    assert buffer.add(packet(20, 3000, False, b"a"))[1] is None
    # Packet 21 is missing: the marker packet alone does not make a frame.
    assert buffer.add(packet(22, 3000, True, b"c"))[1] is None
    frame = buffer.add(packet(21, 3000, False, b"b"))[1]
    assert frame is not None and frame.data == b"abc"


def test_reordered_marker_does_not_cut_a_frame_short() -> None:
    buffer = MarkerJitterBuffer()
    buffer.add(packet(30, 9000, False, b"x"))
    assert buffer.add(packet(32, 9000, True, b"z"))[1] is None
    assert buffer.add(packet(31, 9000, False, b"y"))[1].data == b"xyz"
