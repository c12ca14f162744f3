"""The events the server itself publishes into a room's stream, one typed record each.

A room event reaches four consumers as JSON (WebSocket clients, webhooks, the archive's sealed
event records, the compliance monitor), so its field names are API. Writing each event once, as
a dataclass, keeps those names in one place: a track is always `track_id`, a participant always
`participant`, and a misspelt key is a type error instead of a silently different payload.

Events from plug-in hooks and from the compliance monitor carry free-form data and still go
through `EventLog.publish(type, data)`; everything the room, its tracks and the server say
goes through `EventLog.emit(event)` with one of these classes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from finrtc.model import MediaKind, Role, Severity

# Hook alerts, policies and subscription wiring are for staff: customers do not see them.
STAFF = frozenset({Role.AGENT, Role.OBSERVER})


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerEvent:
    """Base of the typed events; subclasses set `event_type` and, if needed, `audience`."""

    event_type: ClassVar[str]
    # Roles allowed to see the event; None means every role in the room.
    audience: ClassVar[frozenset[Role] | None] = None

    def severity(self) -> Severity:
        return Severity.INFO

    def to_data(self) -> dict[str, Any]:
        return {item.name: _plain(getattr(self, item.name)) for item in fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomStarted(ServerEvent):
    event_type: ClassVar[str] = "room_started"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    # The policy (retention, residency, script) as configured.
    policy: Mapping[str, Any]
    explicit: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomClosed(ServerEvent):
    event_type: ClassVar[str] = "room_closed"

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerDraining(ServerEvent):
    event_type: ClassVar[str] = "server_draining"

    timeout_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(ServerEvent):
    event_type: ClassVar[str] = "session_started"

    session: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(ServerEvent):
    event_type: ClassVar[str] = "session_ended"

    session: str
    clean: bool
    media_time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantJoined(ServerEvent):
    event_type: ClassVar[str] = "participant_joined"

    participant: str
    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantLeft(ServerEvent):
    event_type: ClassVar[str] = "participant_left"

    participant: str
    role: Role
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackPublished(ServerEvent):
    event_type: ClassVar[str] = "track_published"

    participant: str
    role: Role
    track_id: str
    kind: MediaKind
    codec: str
    hooks: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackUnpublished(ServerEvent):
    event_type: ClassVar[str] = "track_unpublished"

    participant: str
    role: Role
    track_id: str
    kind: MediaKind
    reason: str
    clean: bool

    def severity(self) -> Severity:
        return Severity.INFO if self.clean else Severity.WARNING


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackStalled(ServerEvent):
    event_type: ClassVar[str] = "track_stalled"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    participant: str
    track_id: str
    kind: MediaKind
    since_media_time: float

    def severity(self) -> Severity:
        return Severity.WARNING


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackResumed(ServerEvent):
    event_type: ClassVar[str] = "track_resumed"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    participant: str
    track_id: str
    kind: MediaKind
    gap_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionBound(ServerEvent):
    event_type: ClassVar[str] = "subscription_bound"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    viewer: str
    publisher: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingCompromised(ServerEvent):
    event_type: ClassVar[str] = "recording_compromised"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    participant: str
    track_id: str
    reason: str

    def severity(self) -> Severity:
        return Severity.ALERT


@dataclass(frozen=True, slots=True, kw_only=True)
class TimestampingDegraded(ServerEvent):
    """The Time-Stamp Authority did not answer (or answered badly): records are stamped late."""

    event_type: ClassVar[str] = "timestamping_degraded"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    tsa: str
    record: str
    reason: str

    def severity(self) -> Severity:
        return Severity.ALERT


@dataclass(frozen=True, slots=True, kw_only=True)
class TimestampingRestored(ServerEvent):
    event_type: ClassVar[str] = "timestamping_restored"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    tsa: str
    outage_s: float
    late_records: int
    waiting: int

    def severity(self) -> Severity:
        return Severity.WARNING


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveChainHead(ServerEvent):
    """A record of the session's sealed chain (with `archive.witness`): an outside copy of it."""

    event_type: ClassVar[str] = "archive_chain_head"
    audience: ClassVar[frozenset[Role] | None] = STAFF

    session: str
    record: str
    digest: str
