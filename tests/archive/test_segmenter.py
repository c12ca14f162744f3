"""Segment boundaries: video switches at its first keyframe after the boundary, audio at the cut."""

from __future__ import annotations

from typing import Any

from finrtc.archive.segment import TrackMeta
from finrtc.archive.segmenter import ClosedSegment, Segmenter, TrackTable
from finrtc.model import EncodedPacket, MediaKind

FPS = 30


def video(seq: int, keyframe: bool) -> EncodedPacket:
    return EncodedPacket("cam", MediaKind.VIDEO, seq, b"v%d" % seq, seq * 3000, (1, 90_000),
                         keyframe, 0.0)


def audio(seq: int) -> EncodedPacket:
    return EncodedPacket("mic", MediaKind.AUDIO, seq, b"a%d" % seq, seq * 960, (1, 48_000),
                         False, 0.0, duration=960)


def make(segment_seconds: float = 1.0, *tracks: MediaKind) -> tuple[Segmenter, list[tuple[Any, ...]]]:
    table = TrackTable()
    for kind in tracks:
        table.announce(TrackMeta("cam" if kind is MediaKind.VIDEO else "mic", kind, "p", "agent"))
    notes: list[tuple[Any, ...]] = []
    return Segmenter(segment_seconds, table, lambda *event: notes.append(event)), notes


def test_video_waits_for_a_keyframe_and_audio_cuts_at_the_boundary() -> None:
    segmenter, notes = make(1.0, MediaKind.VIDEO, MediaKind.AUDIO)
    closed: list[ClosedSegment] = []
    keyframe_at = 36  # 1.2 s: the boundary (1.0 s) passes before the keyframe arrives
    for seq in range(60):
        for packet in (video(seq, seq in (0, keyframe_at)), audio(seq * 50 // FPS)):
            result = segmenter.accept(packet)
            if result is not None:
                closed.append(result)
    assert len(closed) == 1
    # The next boundary's keyframe is asked for 50 ms early.
    assert closed[0].next_start is not None
    assert segmenter.keyframe_due == closed[0].next_start + 1.0 - 0.05
    first = closed[0].segment
    videos = [p for p in first.packets if p.kind is MediaKind.VIDEO]
    audios = [p for p in first.packets if p.kind is MediaKind.AUDIO]
    assert videos[0].keyframe and videos[-1].sequence == keyframe_at - 1
    # Audio moved to the next segment at the boundary time, not at the late keyframe.
    assert max(p.media_time for p in audios) < 1.0
    assert closed[0].next_start == 1.0
    assert notes == []


def test_video_without_a_first_keyframe_is_skipped_and_sealed_as_an_event() -> None:
    segmenter, notes = make(1.0, MediaKind.VIDEO)
    for seq in range(5):
        assert segmenter.accept(video(seq, seq == 3)) is None
    assert notes and notes[0][0] == "video_skipped_to_keyframe"
    assert notes[0][1] == {"track_id": "cam", "skipped_packets": 3}
    (last,) = segmenter.flush()[-1:]
    assert [p.sequence for p in last.segment.packets] == [3, 4]


def test_no_keyframe_for_a_whole_segment_closes_anyway_with_a_warning() -> None:
    segmenter, notes = make(0.5, MediaKind.VIDEO)
    closed = [c for seq in range(60) if (c := segmenter.accept(video(seq, seq == 0))) is not None]
    assert closed, "the grace period (one segment after the boundary) must close the segment"
    assert any(note[0] == "segment_without_keyframe" for note in notes)


def test_audio_only_sessions_cut_at_the_boundary() -> None:
    segmenter, _notes = make(1.0, MediaKind.AUDIO)
    closed = [c for seq in range(160) if (c := segmenter.accept(audio(seq))) is not None]
    assert len(closed) == 3  # 160 x 20 ms = 3.2 s
    assert all(abs(len(c.segment.packets) - 50) <= 1 for c in closed)
    assert segmenter.keyframe_generation == 4


def test_backwards_timestamps_are_not_archived() -> None:
    segmenter, notes = make(1.0, MediaKind.AUDIO)
    segmenter.accept(audio(5))
    segmenter.accept(audio(4))
    assert notes[0][0] == "packet_not_archived"
    assert segmenter.packets_total == 1
