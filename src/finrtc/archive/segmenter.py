"""Where one archive segment ends and the next begins (the writer thread's intake side).

A segment is due after `segment_seconds` of session time. Each video track moves to the next
segment at its next keyframe, audio moves at the boundary time; once every active video track has
switched, the old segment is closed. Audio-only sessions cut at the boundary time. This is the one
keyframe schedule of the archive: `keyframe_due` (the boundary minus a small lead) is what the
recorder turns into a keyframe request on each video track, once per boundary.

Everything here runs on the recorder's writer thread except `TrackTable`, which the event loop
also writes (tracks announced and ended) and which therefore holds its own lock.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finrtc.archive.records import TrackTotals
from finrtc.archive.segment import TrackMeta
from finrtc.model import EncodedPacket, MediaKind

# Ask for the boundary keyframe slightly early so the frame at/after the boundary is the keyframe.
KEYFRAME_LEAD_S = 0.05

# (type, data, media_time, severity) of an event to seal.
EventSink = Callable[[str, dict[str, Any], float, str], None]


def vp8_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 §9.1)."""
    if len(data) < 10 or data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


@dataclass
class TrackState:
    meta: TrackMeta
    packets: int = 0
    bytes: int = 0
    first_time: float | None = None
    last_time: float = 0.0
    ended: str | None = None
    # Video: inter frames cannot be decoded without the keyframe before them.
    needs_keyframe: bool = True
    skipped: int = 0
    last_pts: int | None = None
    backwards: int = 0

    def totals(self) -> TrackTotals:
        meta = self.meta
        video = meta.kind is MediaKind.VIDEO
        return TrackTotals(
            track_id=meta.track_id, kind=meta.kind.value, participant=meta.participant,
            role=meta.role, codec=meta.codec,
            packets=self.packets, bytes=self.bytes, first_time=self.first_time,
            last_time=self.last_time, ended=self.ended or "session_end",
            width=meta.width if video else None, height=meta.height if video else None,
            sample_rate=None if video else meta.sample_rate,
            channels=None if video else meta.channels,
        )


class TrackTable:
    """The session's tracks; written by the event loop and the writer thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracks: dict[str, TrackState] = {}

    def announce(self, meta: TrackMeta) -> None:
        with self._lock:
            if meta.track_id not in self._tracks:
                self._tracks[meta.track_id] = TrackState(
                    meta, needs_keyframe=meta.kind is MediaKind.VIDEO
                )

    def get(self, track_id: str) -> TrackState | None:
        with self._lock:
            return self._tracks.get(track_id)

    def end(self, track_id: str, clean: bool) -> TrackState | None:
        with self._lock:
            state = self._tracks.get(track_id)
            if state is not None:
                state.ended = "clean" if clean else "unclean"
            return state

    def active_video(self) -> set[str]:
        with self._lock:
            states = list(self._tracks.items())
        return {
            track_id for track_id, state in states
            if state.meta.kind is MediaKind.VIDEO and state.ended is None and state.packets
        }

    def metas(self) -> list[TrackMeta]:
        with self._lock:
            return [state.meta for state in self._tracks.values()]

    def totals(self) -> dict[str, TrackTotals]:
        with self._lock:
            return {track_id: state.totals() for track_id, state in self._tracks.items()}


@dataclass
class OpenSegment:
    packets: list[EncodedPacket] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    start: float = math.inf

    def add(self, packet: EncodedPacket, digest: str) -> None:
        self.packets.append(packet)
        self.digests.append(digest)
        self.start = min(self.start, packet.media_time)


@dataclass(frozen=True)
class ClosedSegment:
    """A segment ready to seal; events dated before `next_start` belong to it (None: all)."""

    segment: OpenSegment
    next_start: float | None


class Segmenter:
    def __init__(self, segment_seconds: float, tracks: TrackTable, note: EventSink) -> None:
        self.segment_seconds = segment_seconds
        self.tracks = tracks
        self._note = note
        self._current = OpenSegment()
        self._pending: OpenSegment | None = None
        self._switched: set[str] = set()
        self._boundary = math.inf
        self._cut = math.inf
        self._early_window = min(0.25, 0.15 * segment_seconds)
        # Read by the event loop (the keyframe request hint); plain floats/ints are atomic.
        self.keyframe_due = math.inf
        self.keyframe_generation = 0
        self.media_start: float | None = None
        self.media_end = 0.0
        self.packets_total = 0
        self.bytes_total = 0

    @property
    def waiting_for_keyframes(self) -> bool:
        return self._pending is not None

    def _track(self, packet: EncodedPacket) -> TrackState:
        state = self.tracks.get(packet.track_id)
        if state is None:
            # Not announced with add_track: infer what the container needs.
            self.tracks.announce(TrackMeta(packet.track_id, packet.kind, "unknown", "unknown"))
            state = self.tracks.get(packet.track_id)
            assert state is not None
            self._note(
                "track_unannounced", {"track_id": packet.track_id, "kind": packet.kind.value},
                packet.media_time, "warning",
            )
        return state

    def _admit(self, packet: EncodedPacket, state: TrackState) -> bool:
        """False for a packet the container cannot take (the loss is sealed as an event)."""
        video = packet.kind is MediaKind.VIDEO
        if video and state.needs_keyframe:
            if not packet.keyframe:
                state.skipped += 1
                return False
            state.needs_keyframe = False
            if state.skipped:
                self._note(
                    "video_skipped_to_keyframe",
                    {"track_id": packet.track_id, "skipped_packets": state.skipped},
                    packet.media_time, "warning",
                )
                state.skipped = 0
        if video and packet.keyframe and (state.meta.width == 0 or state.meta.height == 0):
            size = vp8_dimensions(packet.data)
            if size is not None:
                state.meta.width, state.meta.height = size
        if state.last_pts is not None and packet.pts <= state.last_pts:
            # A container track needs strictly increasing timestamps.
            state.backwards += 1
            self._note(
                "packet_not_archived",
                {"track_id": packet.track_id, "sequence": packet.sequence, "pts": packet.pts,
                 "previous_pts": state.last_pts, "reason": "timestamp not increasing"},
                packet.media_time, "warning",
            )
            return False
        state.last_pts = packet.pts
        return True

    def accept(self, packet: EncodedPacket) -> ClosedSegment | None:
        """Place one packet; returns the segment this packet closed, if any."""
        state = self._track(packet)
        if not self._admit(packet, state):
            return None
        video = packet.kind is MediaKind.VIDEO
        digest = hashlib.sha256(packet.data).hexdigest()
        now = packet.media_time
        if self.media_start is None:
            self.media_start = now
            self._start_clock(now)
        state.packets += 1
        state.bytes += len(packet.data)
        if state.first_time is None:
            state.first_time = now
        state.last_time = max(state.last_time, now)
        self.media_end = max(self.media_end, now)
        self.packets_total += 1
        self.bytes_total += len(packet.data)

        closed: ClosedSegment | None = None
        # A keyframe shortly before the boundary (the encoder's own periodic keyframe, slightly
        # early after clock slew) starts the next segment rather than waiting a whole GOP.
        early = video and packet.keyframe and now >= self._boundary - self._early_window
        if self._pending is None and (now >= self._boundary or early) and self._current.packets:
            if self.tracks.active_video():
                self._pending = OpenSegment()
                self._switched = set()
                self._cut = min(now, self._boundary)
            else:
                closed = self._close(next_start=now, successor=OpenSegment())
        if self._pending is None:
            self._current.add(packet, digest)
            return closed
        # A boundary is pending: route by track.
        if video:
            if packet.track_id in self._switched or packet.keyframe:
                self._switched.add(packet.track_id)
                self._pending.add(packet, digest)
            else:
                self._current.add(packet, digest)
        elif now >= self._cut:
            self._pending.add(packet, digest)
        else:
            self._current.add(packet, digest)
        active = self.tracks.active_video()
        grace_over = now >= self._boundary + self.segment_seconds
        if active <= self._switched or grace_over:
            if grace_over:
                for track_id in sorted(active - self._switched):
                    self._note(
                        "segment_without_keyframe",
                        {"track_id": track_id,
                         "detail": "no keyframe within one segment after the boundary"},
                        now, "warning",
                    )
            pending, self._pending = self._pending, None
            return self._close(next_start=pending.start if pending.packets else now,
                               successor=pending)
        return None

    def lost_packets(self, track_id: str) -> None:
        """Packets of this track were dropped before us: video resumes at a keyframe."""
        state = self.tracks.get(track_id)
        if state is not None and state.meta.kind is MediaKind.VIDEO:
            state.needs_keyframe = True

    def flush(self) -> list[ClosedSegment]:
        """The session ends: close what is open (a pending boundary first)."""
        closed = []
        if self._pending is not None:
            pending, self._pending = self._pending, None
            closed.append(self._close(next_start=pending.start if pending.packets else None,
                                      successor=pending))
        closed.append(self._close(next_start=None, successor=OpenSegment()))
        return closed

    def _close(self, next_start: float | None, successor: OpenSegment) -> ClosedSegment:
        segment, self._current = self._current, successor
        if next_start is not None:
            self._start_clock(next_start)
        return ClosedSegment(segment, next_start)

    def _start_clock(self, start: float) -> None:
        self._boundary = start + self.segment_seconds
        self.keyframe_due = self._boundary - KEYFRAME_LEAD_S
        self.keyframe_generation += 1
