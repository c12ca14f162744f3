"""A participant in a room and the media sessions (WHIP publish, WHEP subscribe) it holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from finrtc.media.forwarder import ForwardedTrack
from finrtc.media.peer import PeerConnection
from finrtc.media.pipeline import TrackPipeline
from finrtc.model import Role


@dataclass(frozen=True)
class SubscriptionTarget:
    """Whose tracks a viewer wants: a participant identity, the first publisher of a role, or
    (both None) the first publisher other than the viewer itself."""

    participant: str | None = None
    role: Role | None = None

    def matches(self, identity: str, role: Role, viewer: str) -> bool:
        if self.participant is not None:
            return identity == self.participant
        if self.role is not None:
            return role is self.role and identity != viewer
        return identity != viewer


@dataclass(frozen=True)
class IceCredentials:
    """A WHIP/WHEP resource's ICE session: the client's credentials from its offer (a PATCH
    with others is an ICE restart) and the entity-tag a PATCH must name in If-Match (RFC 9725)."""

    ufrag: str | None
    pwd: str | None
    etag: str


@dataclass
class Publication:
    resource_id: str
    peer: PeerConnection
    pipelines: list[TrackPipeline] = field(default_factory=list)
    ice: IceCredentials | None = None


@dataclass
class Subscription:
    resource_id: str
    peer: PeerConnection
    target: SubscriptionTarget
    tracks: list[ForwardedTrack]
    # The publisher the tracks are bound to, once one matches.
    bound_to: str | None = None
    ice: IceCredentials | None = None


@dataclass
class Participant:
    identity: str
    role: Role
    publication: Publication | None = None
    subscriptions: dict[str, Subscription] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return self.publication is None and not self.subscriptions

    def to_json(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "role": self.role.value,
            "publishing": self.publication is not None,
            "tracks": [
                {"id": p.track.track_id, "kind": p.kind.value, "subscribers": p.subscriber_count}
                for p in (self.publication.pipelines if self.publication else [])
            ],
            "subscriptions": len(self.subscriptions),
        }
