"""Rooms: who is in a call, what they publish, who watches whom.

All room state is touched only from the event loop. Media work happens in the track pipelines.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from finrtc import metrics
from finrtc.auth import Grant
from finrtc.config import LoadedConfig, RoomPolicy
from finrtc.errors import AuthError, CapacityError, ConflictError, ForbiddenError, GoneError, NotFoundError
from finrtc.events import EventLog, RoomEvent
from finrtc.hooks.chain import HookChain, HookProvider
from finrtc.hooks.contract import HookEvent
from finrtc.logging_setup import bind_log_context
from finrtc.media.peer import IncomingTrack, PeerConnection
from finrtc.media.pipeline import TrackPipeline
from finrtc.memory import HEAP
from finrtc.model import MediaKind, Role, TrackInfo
from finrtc.participant import (
    IceCredentials,
    Participant,
    Publication,
    Subscription,
    SubscriptionTarget,
)
from finrtc.room_events import (
    STAFF,
    ParticipantJoined,
    ParticipantLeft,
    RecordingCompromised,
    RoomClosed,
    RoomStarted,
    ServerDraining,
    SessionEnded,
    SessionStarted,
    SubscriptionBound,
    TrackPublished,
    TrackUnpublished,
)
from finrtc.session import CallSession, ExtensionFactory, SessionExtension
from finrtc.tasks import spawn

log = logging.getLogger(__name__)

# Without a recording service, keyframes still come this often so late joiners recover quickly.
CLOSED_ROOMS_REMEMBERED = 1024
# Rooms cancelled at the drain deadline get this long to unwind before the server moves on.
DRAIN_CANCEL_GRACE_S = 1.0


class Room:
    def __init__(
        self,
        name: str,
        policy: RoomPolicy,
        manager: RoomManager,
        *,
        explicit: bool,
    ) -> None:
        self.name = name
        self.policy = policy
        self.explicit = explicit
        self.created_at = time.time()
        self.events = EventLog(name)
        self.events.bind_loop(asyncio.get_running_loop())
        self.events.add_listener(self._route_event)
        self._manager = manager
        self.participants: dict[str, Participant] = {}
        self._resources: dict[str, tuple[str, str]] = {}  # resource id -> (identity, "whip"|"whep")
        self.session: CallSession | None = None
        self._closing_sessions: dict[CallSession, asyncio.Event] = {}
        self.last_session_id: str | None = None
        self.closed = False
        self._lock = asyncio.Lock()

    # ---- events ---------------------------------------------------------------------------

    def _route_event(self, event: RoomEvent) -> None:
        if self.session is not None:
            self.session.on_event(event)
        for closing in self._closing_sessions:
            closing.on_event(event)
        self._manager.on_room_event(event)

    def _emit_hook_event(self, event: HookEvent) -> None:
        """From a worker thread: a hook's event joins the room's ordered stream."""
        data = {
            "hook": event.hook,
            "participant": event.track.participant,
            "role": event.track.role.value,
            "track_id": event.track.track_id,
            "kind": event.track.kind.value,
            "media_time": round(event.media_time, 3),
            **event.data,
        }
        self.events.publish_threadsafe(event.type, data, severity=event.severity, audience=STAFF)

    # ---- sessions ---------------------------------------------------------------------------

    async def _ensure_session(self) -> CallSession:
        if self.session is None:
            session = CallSession(self.name)
            try:
                session.extensions = await self._manager.create_extensions(self, session)
            except BaseException:
                await session.close(clean=False)
                raise
            self.session = session
            self.events.emit(SessionStarted(session=session.session_id))
        return self.session

    def _detach_session(self, clean: bool) -> CallSession | None:
        """End the live session's bookkeeping now; its services are closed by `_close_session`.

        A new publisher starts a new session at once; this one still hears the events its own
        services emit while closing (the compliance report, sealed by the archive).
        """
        session = self.session
        if session is None:
            return None
        self.events.emit(
            SessionEnded(session=session.session_id, clean=clean, media_time=round(session.clock(), 3))
        )
        self.session = None
        self.last_session_id = session.session_id
        self._closing_sessions[session] = asyncio.Event()
        return session

    async def _close_session(self, session: CallSession, clean: bool) -> None:
        try:
            await session.close(clean)
        finally:
            done = self._closing_sessions.pop(session, None)
            if done is not None:
                done.set()

    # ---- participants -----------------------------------------------------------------------

    def _participant(self, grant: Grant) -> Participant:
        participant = self.participants.get(grant.identity)
        if participant is None:
            if len(self.participants) >= self.policy.max_participants:
                raise CapacityError(
                    f"room {self.name!r} is full ({self.policy.max_participants} participants)"
                )
            participant = Participant(grant.identity, grant.role)
            self.participants[grant.identity] = participant
            metrics.PARTICIPANTS.labels(role=grant.role.value).inc()
            self.events.emit(ParticipantJoined(participant=grant.identity, role=grant.role))
        elif participant.role is not grant.role:
            raise ConflictError(
                f"{grant.identity!r} is already in room {self.name!r} as {participant.role.value}"
            )
        return participant

    def _maybe_leave(self, participant: Participant, reason: str) -> None:
        if participant.idle and self.participants.get(participant.identity) is participant:
            del self.participants[participant.identity]
            metrics.PARTICIPANTS.labels(role=participant.role.value).dec()
            self.events.emit(
                ParticipantLeft(participant=participant.identity, role=participant.role, reason=reason)
            )
            if not self.participants and not self.explicit and not self.closed:
                # Rooms created by a first publish go away with their last participant.
                self._manager.schedule_close_if_empty(self.name)

    def _new_resource(self, identity: str, kind: str) -> str:
        resource_id = secrets.token_urlsafe(18)
        self._resources[resource_id] = (identity, kind)
        return resource_id

    async def publish(self, grant: Grant, offer_sdp: str) -> tuple[str, str]:
        """WHIP: accept a publisher's offer. Returns (resource id, SDP answer)."""
        async with self._lock:
            self._check_open()
            participant = self._participant(grant)
            if participant.publication is not None:
                self._maybe_leave(participant, "rejected")
                raise ConflictError(
                    f"{grant.identity!r} is already publishing in room {self.name!r}; "
                    "DELETE that session first"
                )
            resource_id = self._new_resource(grant.identity, "whip")
            peer = PeerConnection(
                self._manager.config.media,
                lambda clean: self._schedule_end(
                    resource_id, "connection closed" if clean else "connection lost", clean
                ),
            )
            try:
                answer, incoming = await peer.accept_publisher(offer_sdp)
            except Exception:
                self._resources.pop(resource_id, None)
                await peer.close()
                self._maybe_leave(participant, "rejected")
                raise
            try:
                session = await self._ensure_session()
            except BaseException:
                self._resources.pop(resource_id, None)
                await peer.close()
                self._maybe_leave(participant, "rejected")
                raise
            publication = Publication(resource_id, peer)
            participant.publication = publication
            # Pipeline tasks inherit this context, so their log lines name room and publisher.
            bind_log_context(room=self.name, participant=grant.identity, session=session.session_id)
            for index, item in enumerate(incoming):
                pipeline = self._start_pipeline(
                    participant, session, item, f"{resource_id[:8]}-{item.kind.value}{index}", resource_id
                )
                publication.pipelines.append(pipeline)
            self._bind_waiting_subscribers(participant)
            return resource_id, answer

    def _start_pipeline(
        self,
        participant: Participant,
        session: CallSession,
        item: IncomingTrack,
        track_id: str,
        resource_id: str,
    ) -> TrackPipeline:
        info = TrackInfo(
            self.name, session.session_id, participant.identity, participant.role, track_id, item.kind
        )
        providers: list[HookProvider] = [*self._manager.hook_factories, *session.hook_providers()]
        chain = HookChain(info, providers, self._emit_hook_event, self._hook_compromised(info))
        pipeline = TrackPipeline(
            info,
            item.track,
            chain,
            self._manager.executor,
            self._manager.config.media,
            session.clock,
            self.events.emit,
            # aiortc decodes VP8 with libvpx, which hands out frames it no longer references
            # (tests/media/test_decoder_frames.py); other decoders keep references: copy those.
            frames_are_private=item.codec.lower() == "video/vp8",
            request_upstream_keyframe=item.request_keyframe,
            on_media_lost=lambda: self._schedule_end(
                resource_id, "media lost: the publisher vanished without ending its session", clean=False
            ),
        )
        session.on_track(pipeline)
        pipeline.start()
        self.events.emit(
            TrackPublished(
                participant=participant.identity,
                role=participant.role,
                track_id=track_id,
                kind=item.kind,
                codec=item.codec,
                hooks=tuple(chain.hook_names),
            )
        )
        return pipeline

    def _hook_compromised(self, info: TrackInfo) -> Callable[[str], None]:
        def compromised(reason: str) -> None:
            self.events.emit_threadsafe(
                RecordingCompromised(participant=info.participant, track_id=info.track_id, reason=reason)
            )

        return compromised

    async def subscribe(self, grant: Grant, offer_sdp: str, target: SubscriptionTarget) -> tuple[str, str]:
        """WHEP: accept a viewer's offer; tracks bind to the target publisher now or when it arrives."""
        async with self._lock:
            self._check_open()
            participant = self._participant(grant)
            resource_id = self._new_resource(grant.identity, "whep")
            peer = PeerConnection(
                self._manager.config.media,
                lambda clean: self._schedule_end(
                    resource_id, "connection closed" if clean else "connection lost", clean
                ),
            )
            try:
                answer, tracks = await peer.accept_subscriber(
                    offer_sdp, self._manager.config.media.subscriber_queue_packets
                )
            except Exception:
                self._resources.pop(resource_id, None)
                await peer.close()
                self._maybe_leave(participant, "rejected")
                raise
            subscription = Subscription(resource_id, peer, target, tracks)
            participant.subscriptions[resource_id] = subscription
            for publisher in self.participants.values():
                if self._bind(subscription, participant.identity, publisher):
                    break
            return resource_id, answer

    def _bind(self, subscription: Subscription, viewer: str, publisher: Participant) -> bool:
        if subscription.bound_to is not None or publisher.publication is None:
            return False
        if not subscription.target.matches(publisher.identity, publisher.role, viewer):
            return False
        pipelines = {
            kind: [p for p in publisher.publication.pipelines if p.kind is kind] for kind in MediaKind
        }
        used: dict[MediaKind, int] = dict.fromkeys(MediaKind, 0)
        for track in subscription.tracks:
            candidates = pipelines[track.media_kind]
            if used[track.media_kind] < len(candidates):
                candidates[used[track.media_kind]].add_subscriber(track)
                used[track.media_kind] += 1
        subscription.bound_to = publisher.identity
        self.events.emit(SubscriptionBound(viewer=viewer, publisher=publisher.identity))
        return True

    def _bind_waiting_subscribers(self, publisher: Participant) -> None:
        for viewer in self.participants.values():
            for subscription in viewer.subscriptions.values():
                self._bind(subscription, viewer.identity, publisher)

    # ---- ending -----------------------------------------------------------------------------

    def _schedule_end(self, resource_id: str, reason: str, clean: bool) -> None:
        if resource_id in self._resources:
            spawn(self.end_resource(resource_id, reason=reason, clean=clean), name=f"end:{resource_id[:8]}")

    def owner_of(self, resource_id: str, kind: str) -> str:
        entry = self._resources.get(resource_id)
        if entry is None or entry[1] != kind:
            raise NotFoundError(f"no {kind.upper()} session {resource_id!r} in room {self.name!r}")
        return entry[0]

    def _live_resource(self, resource_id: str, kind: str) -> Publication | Subscription:
        identity = self.owner_of(resource_id, kind)
        participant = self.participants.get(identity)
        if participant is not None:
            publication = participant.publication
            if kind == "whip" and publication is not None and publication.resource_id == resource_id:
                return publication
            subscription = participant.subscriptions.get(resource_id)
            if kind == "whep" and subscription is not None:
                return subscription
        raise NotFoundError(f"{kind.upper()} session {resource_id!r} has ended")

    def bind_ice(self, resource_id: str, kind: str, ice: IceCredentials) -> None:
        """Signaling's view of the resource's ICE session; it lives and dies with the resource."""
        self._live_resource(resource_id, kind).ice = ice

    def ice_credentials(self, resource_id: str, kind: str) -> IceCredentials | None:
        return self._live_resource(resource_id, kind).ice

    async def add_remote_candidates(
        self,
        resource_id: str,
        kind: str,
        candidates: Sequence[tuple[str | None, int, str]],
        end_of_candidates: bool,
    ) -> int:
        """Trickle ICE into a live resource's peer connection."""
        peer = self._live_resource(resource_id, kind).peer
        return await peer.add_remote_candidates(candidates, end_of_candidates)

    async def end_resource(self, resource_id: str, *, reason: str, clean: bool = True) -> None:
        # Serialised with publish/subscribe and other ends, so a participant's events keep their
        # order (its tracks are unpublished before it leaves). Closing the session's services can
        # take seconds (final recognition, sealing): that happens after the lock is released.
        async with self._lock:
            ending = await self._end_resource(resource_id, reason, clean)
        if ending is not None:
            await self._close_session(ending, clean)

    async def _end_resource(self, resource_id: str, reason: str, clean: bool) -> CallSession | None:
        entry = self._resources.pop(resource_id, None)
        if entry is None:
            return None
        identity, kind = entry
        participant = self.participants.get(identity)
        if participant is None:
            return None
        if kind == "whip" and participant.publication is not None:
            publication = participant.publication
            participant.publication = None
            await publication.peer.close()
            for pipeline in publication.pipelines:
                await pipeline.stop(clean=clean)
                self.events.emit(
                    TrackUnpublished(
                        participant=identity,
                        role=participant.role,
                        track_id=pipeline.track.track_id,
                        kind=pipeline.kind,
                        reason=reason,
                        clean=clean,
                    )
                )
            await self._unbind_from(identity)
        elif kind == "whep":
            subscription = participant.subscriptions.pop(resource_id, None)
            if subscription is not None:
                await subscription.peer.close()
                self._detach(subscription)
        ending = None
        if not any(p.publication is not None for p in self.participants.values()):
            ending = self._detach_session(clean)
        self._maybe_leave(participant, reason)
        return ending

    def _detach(self, subscription: Subscription) -> None:
        if subscription.bound_to is None:
            return
        publisher = self.participants.get(subscription.bound_to)
        if publisher is not None and publisher.publication is not None:
            for pipeline in publisher.publication.pipelines:
                for track in subscription.tracks:
                    pipeline.remove_subscriber(track)

    async def _unbind_from(self, publisher: str) -> None:
        for viewer in list(self.participants.values()):
            for subscription in list(viewer.subscriptions.values()):
                if subscription.bound_to == publisher:
                    for track in subscription.tracks:
                        await subscription.peer.end_forwarding(track)

    async def remove_participant(self, identity: str, reason: str = "removed") -> None:
        participant = self.participants.get(identity)
        if participant is None:
            raise NotFoundError(f"{identity!r} is not in room {self.name!r}")
        for resource_id in [r for r, (who, _) in self._resources.items() if who == identity]:
            await self.end_resource(resource_id, reason=reason)

    async def close(self, reason: str = "closed", clean: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        for resource_id in list(self._resources):
            await self.end_resource(resource_id, reason=reason, clean=clean)
        ending = self._detach_session(clean)
        if ending is not None:
            await self._close_session(ending, clean)
        # Sessions ended just before (the last participant left) may still be closing: their
        # final events must reach the stream before it closes.
        for done in list(self._closing_sessions.values()):
            await done.wait()
        self.events.emit(RoomClosed(reason=reason))
        self.events.close()

    def _check_open(self) -> None:
        if self.closed:
            raise NotFoundError(f"room {self.name!r} is closed")
        if self._manager.draining:
            raise CapacityError("the server is shutting down; reconnect to another instance")

    @property
    def publishing(self) -> bool:
        return any(p.publication is not None for p in self.participants.values())

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "created": self.created_at,
            "explicit": self.explicit,
            "policy": self.policy.model_dump(),
            "state": "live" if self.session is not None else "idle",
            "session": self.session.to_json() if self.session is not None else None,
            "last_session": self.last_session_id,
            "participants": [p.to_json() for p in self.participants.values()],
        }


@dataclass(frozen=True, slots=True)
class ClosedRoom:
    reason: str
    at: float
    # Closed through the room API (the call is over): the room's earlier participant tokens are
    # revoked. A room that closed because it emptied keeps them, so a dropped client can rejoin.
    revoked_tokens: bool


class RoomManager:
    def __init__(
        self,
        loaded: LoadedConfig,
        hook_factories: Sequence[HookProvider],
        executor: Executor,
        extension_factories: Sequence[ExtensionFactory] = (),
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.hook_factories = list(hook_factories)
        self.executor = executor
        self.extension_factories = list(extension_factories)
        self.rooms: dict[str, Room] = {}
        # Recently closed rooms, so a late request learns "closed" (410), not "never existed"
        # (404), and participant tokens issued before the close stop working (the call they were
        # for is over). Kept when the name is reused; bounded, so a create/close loop cannot grow it.
        self.closed: OrderedDict[str, ClosedRoom] = OrderedDict()
        self.draining = False
        self._drain_deadline: float | None = None
        self._event_listeners: list[Callable[[RoomEvent], None]] = []

    def add_event_listener(self, listener: Callable[[RoomEvent], None]) -> None:
        """Server-wide consumers of every room's events (webhooks)."""
        self._event_listeners.append(listener)

    def on_room_event(self, event: RoomEvent) -> None:
        for listener in self._event_listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", event.type)

    async def create_extensions(self, room: Room, session: CallSession) -> list[SessionExtension]:
        extensions: list[SessionExtension] = []
        for factory in self.extension_factories:
            extension = await factory(room, session)
            if extension is not None:
                extensions.append(extension)
        return extensions

    def get(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            closed = self.closed.get(name)
            if closed is not None:
                raise GoneError(
                    f"room {name!r} was closed ({closed.reason}); create it again to reuse the name"
                )
            raise NotFoundError(f"room {name!r} does not exist")
        return room

    def create(self, name: str, policy: RoomPolicy | None = None) -> Room:
        if name in self.rooms:
            raise ConflictError(f"room {name!r} already exists")
        return self._add(name, policy or self.config.rooms.default_policy, explicit=True)

    def get_for_publish(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is not None:
            return room
        if self.config.rooms.require_explicit_creation:
            raise NotFoundError(f"room {name!r} does not exist; create it through the room API first")
        return self._add(name, self.config.rooms.default_policy, explicit=False)

    def _add(self, name: str, policy: RoomPolicy, *, explicit: bool) -> Room:
        if self.draining:
            raise CapacityError("the server is shutting down")
        room = Room(name, policy, self, explicit=explicit)
        self.rooms[name] = room
        metrics.ROOMS.inc()
        # The policy (retention, residency, script) is for staff, not for customers.
        room.events.emit(RoomStarted(policy=policy.model_dump(), explicit=explicit))
        return room

    async def close_room(self, name: str, reason: str = "closed", *, revoke_tokens: bool = False) -> None:
        room = self.get(name)
        await room.close(reason)
        if self.rooms.get(name) is room:
            del self.rooms[name]
            metrics.ROOMS.dec()
            earlier = self.closed.pop(name, None)
            # Closing again without revoking must not un-revoke what an earlier close revoked.
            if earlier is not None and earlier.revoked_tokens and not revoke_tokens:
                self.closed[name] = ClosedRoom(reason, earlier.at, True)
            else:
                self.closed[name] = ClosedRoom(reason, time.time(), revoke_tokens)
            while len(self.closed) > CLOSED_ROOMS_REMEMBERED:
                self.closed.popitem(last=False)
            # The room's peers have released their native memory; let the allocator return it.
            HEAP.release_soon()

    def schedule_close_if_empty(self, name: str) -> None:
        async def close_if_still_empty() -> None:
            room = self.rooms.get(name)
            if room is not None and not room.participants and not room.closed:
                await self.close_room(name, "empty")

        spawn(close_if_still_empty(), name=f"close-empty:{name}")

    async def drain(self, timeout_s: float, reason: str = "server shutting down") -> bool:
        """Take no new rooms, warn every room, close them all (recordings sealed) concurrently.

        The first call fixes one deadline that every later call shares (serve drains on SIGTERM,
        the app's cleanup drains again), so `timeout_s` bounds the whole shutdown, not each
        pass. True when every room closed in time; rooms still closing at the deadline are
        cancelled and their sessions are left for recovery to seal as interrupted."""
        loop = asyncio.get_running_loop()
        if self._drain_deadline is None:
            self._drain_deadline = loop.time() + timeout_s
            self.draining = True
            for room in self.rooms.values():
                room.events.emit(ServerDraining(timeout_s=timeout_s))
        closing = [
            asyncio.ensure_future(self._close_for_drain(name, reason)) for name in list(self.rooms)
        ]
        if not closing:
            return True
        _, pending = await asyncio.wait(closing, timeout=max(0.0, self._drain_deadline - loop.time()))
        if not pending:
            return True
        log.error(
            "drain timeout (%.1f s) reached with %d room(s) still closing; their sessions stay "
            "open for recovery", timeout_s, len(pending),
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=DRAIN_CANCEL_GRACE_S)
        return False

    async def _close_for_drain(self, name: str, reason: str) -> None:
        try:
            await self.close_room(name, reason)
        except (NotFoundError, GoneError):
            pass  # closed meanwhile by its last participant leaving
        except Exception:
            log.exception("room %s failed to close during the drain", name)

    def check_token_current(self, grant: Grant) -> None:
        """Participant tokens die with the room they were issued for: one issued before its room
        was closed opens no new call under that name (admin tokens are the operator's)."""
        if grant.admin or grant.room is None:
            return
        closed = self.closed.get(grant.room)
        # iat has whole seconds: a token minted in the second of the close still works.
        if closed is not None and closed.revoked_tokens and grant.issued_at < int(closed.at):
            raise AuthError(
                f"this token was issued for room {grant.room!r} before it was closed ({closed.reason}); "
                "ask the backend for a new token"
            )

    def check_role_can_view(self, grant: Grant, room: Room) -> None:
        if grant.role is Role.CUSTOMER and grant.room != room.name:
            raise ForbiddenError("customers may only see their own room")
