"""The server's core vocabulary: who is in a call, what kind of media, how serious an event is.

Every layer (auth, events, media, archive, compliance) speaks these types, so they live here,
below all of them, with no dependency on anything else in finrtc. The hook contract re-exports
them for plug-ins.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MediaKind(enum.StrEnum):
    VIDEO = "video"
    AUDIO = "audio"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ALERT = "alert"


class Role(enum.StrEnum):
    AGENT = "agent"
    CUSTOMER = "customer"
    OBSERVER = "observer"


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """Who published a track, in which room and session."""

    room: str
    session_id: str
    participant: str
    role: Role
    track_id: str
    kind: MediaKind


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded frame exactly as forwarded: the bytes subscribers and the archive receive."""

    track_id: str
    kind: MediaKind
    sequence: int
    data: bytes
    pts: int
    # Numerator / denominator of the pts time base (1/90000 video, 1/48000 audio).
    time_base: tuple[int, int]
    keyframe: bool
    wall_clock: float
    duration: int = 0

    @property
    def media_time(self) -> float:
        return self.pts * self.time_base[0] / self.time_base[1]
