"""The session services a server runs (archive recorder, compliance) and the keys they need.

Each service plugs into a room's call session as a `SessionExtension`, so rooms and media know
nothing about recording or scripts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nacl.public import PublicKey

from finrtc.archive import access_log, seal_observer
from finrtc.archive.keys import Signer, ensure_dev_keys, load_archive_public_key
from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.stamper import SessionStamps, TimestampService, attach
from finrtc.archive.storage import Storage
from finrtc.archive.targets import StorageTargets
from finrtc.compliance.monitor import ComplianceMonitor
from finrtc.compliance.runtime import ComplianceRuntime
from finrtc.config import LoadedConfig
from finrtc.errors import ArchiveError, CapacityError, FinrtcError
from finrtc.events import RoomEvent
from finrtc.hooks.chain import HookProvider
from finrtc.identity.runtime import IdentityRuntime
from finrtc.media.pipeline import TrackPipeline
from finrtc.model import Severity
from finrtc.room_events import ArchiveChainHead, TimestampingDegraded, TimestampingRestored
from finrtc.session import CallSession, ExtensionFactory, SessionExtension

if TYPE_CHECKING:
    from finrtc.room import Room

log = logging.getLogger(__name__)

# Room events that say nothing the media chain does not already prove are not sealed.
UNSEALED_EVENTS = frozenset({"subscription_bound", ArchiveChainHead.event_type})


def prepare_data_dir(loaded: LoadedConfig) -> None:
    """Create the data folder and, in dev mode, the archive keys on first start."""
    loaded.data_dir.mkdir(parents=True, exist_ok=True)
    if loaded.dev_mode and loaded.config.archive.enabled:
        ensure_dev_keys(loaded.data_dir / "keys")


@dataclass(frozen=True)
class ArchiveKeys:
    signer: Signer
    recipients: list[PublicKey]


def load_archive_keys(loaded: LoadedConfig) -> ArchiveKeys:
    archive = loaded.config.archive
    signer = Signer.from_file(loaded.resolve(archive.signer_key_file))
    recipients = [load_archive_public_key(loaded.resolve(path)) for path in archive.archive_public_key_files]
    if not recipients:
        raise ArchiveError(
            "archive.archive_public_key_files is empty: the session keys could never be recovered"
        )
    return ArchiveKeys(signer, recipients)


class ArchiveExtension:
    """Records one call session: every encoded packet and every room event, sealed."""

    name = "archive"

    def __init__(self, recorder: SessionRecorder, session: CallSession,
                 stamps: SessionStamps | None = None) -> None:
        self.recorder = recorder
        self.stamps = stamps
        self._session = session
        self._pipelines: dict[str, TrackPipeline] = {}
        recorder.on_keyframe_needed = self._keyframe_needed

    def _keyframe_needed(self, track_id: str) -> None:
        pipeline = self._pipelines.get(track_id)
        if pipeline is not None:
            pipeline.request_keyframe("segment_boundary")

    def hook_providers(self) -> Sequence[HookProvider]:
        return ()

    def on_track(self, pipeline: TrackPipeline) -> None:
        track = pipeline.track
        self._pipelines[track.track_id] = pipeline
        self.recorder.add_track(track)
        pipeline.add_packet_listener(self.recorder.offer)
        pipeline.add_end_listener(lambda clean: self.recorder.track_ended(track.track_id, clean))

    def on_event(self, event: RoomEvent) -> None:
        if event.type in UNSEALED_EVENTS:
            return
        media_time = event.data.get("media_time")
        at = float(media_time) if isinstance(media_time, int | float) else self._session.clock()
        data = dict(event.data)
        data["seq"] = event.seq
        if event.type == "recording_compromised":
            self.recorder.mark_compromised(str(event.data.get("reason", "unknown")), at)
            return
        self.recorder.record_event(event.type, data, at, event.severity.value)

    async def close(self, clean: bool) -> None:
        await self.recorder.close("session ended" if clean else "session ended uncleanly")
        if self.stamps is not None:
            # Bounded by archive.timestamping.close_wait_s; what is left is reported by verify.
            await self.stamps.wait()


def _room_notify(room: Room) -> Callable[[str, dict[str, Any], str], None]:
    """Stamping trouble as typed room events (the archive extension seals them in the chain)."""

    def notify(event_type: str, data: dict[str, Any], severity: str) -> None:
        del severity  # the typed event carries its own
        if event_type == TimestampingDegraded.event_type:
            room.events.emit_threadsafe(TimestampingDegraded(**data))
        elif event_type == TimestampingRestored.event_type:
            room.events.emit_threadsafe(TimestampingRestored(**data))

    return notify


class ArchiveAccess:
    """Appends the server's own reads of recorded sessions (the room API's compliance report) to
    the session's access log, signed by the server's key and naming the token's identity."""

    KEPT = 1000

    def __init__(self, targets: StorageTargets, signer: Signer) -> None:
        self.targets = targets
        self.signer = signer
        # room -> (session prefix, the storage target of its residency)
        self._sessions: OrderedDict[str, tuple[str, Storage]] = OrderedDict()

    def session_started(self, room: str, prefix: str, storage: Storage) -> None:
        self._sessions[room] = (prefix, storage)
        self._sessions.move_to_end(room)
        while len(self._sessions) > self.KEPT:
            self._sessions.popitem(last=False)

    async def report_read(self, room: str, identity: str, role: str, admin: bool) -> None:
        known = self._sessions.get(room)
        if known is None:
            return
        prefix, storage = known
        actor = access_log.Actor.with_key(self.signer, f"{identity} ({role}) via the room API")
        try:
            await asyncio.to_thread(
                access_log.append, storage, prefix, actor, "report_read",
                detail={"identity": identity, "role": role, "admin": admin},
            )
        except (FinrtcError, OSError) as error:
            log.error("access log of %s not written: %s", prefix, error)


class ChainWitness:
    """Seal observer: every sealed record's digest as an `archive_chain_head` room event (the
    webhooks deliver it, signed, to the operator's witness store)."""

    def __init__(self, room: Room, session: str) -> None:
        self.room = room
        self.session = session

    def extra_fields(self, record_type: str) -> dict[str, Any]:
        return {"witness": True} if record_type == "manifest" else {}

    def sealed(self, name: str, digest: str) -> None:
        self.room.events.emit_threadsafe(
            ArchiveChainHead(session=self.session, record=name, digest=digest))


def timestamp_service(loaded: LoadedConfig) -> TimestampService | None:
    settings = loaded.config.archive.timestamping
    if not loaded.config.archive.enabled or not settings.enabled:
        return None
    return TimestampService.from_config(settings, loaded.resolve)


def archive_factory(loaded: LoadedConfig, timestamps: TimestampService | None = None,
                    access: ArchiveAccess | None = None) -> ExtensionFactory:
    keys = load_archive_keys(loaded)
    targets = access.targets if access is not None else StorageTargets(
        loaded.config.archive, loaded.data_dir)

    async def create(room: Room, session: CallSession) -> SessionExtension | None:
        if not room.policy.recording:
            return None
        try:
            # A residency without a target is refused here too (room creation checks it first).
            target = targets.for_residency(room.policy.residency)
            recorder = SessionRecorder.create(
                loaded.config.archive,
                loaded.data_dir,
                room.name,
                session.session_id,
                room.policy.retention_class,
                room.policy.residency,
                keys.signer,
                keys.recipients,
                storage=target.storage,
            )
            stamps = attach(timestamps, recorder, _room_notify(room)) if timestamps else None
            if loaded.config.archive.witness:
                observers: list[seal_observer.SealObserver] = [
                    ChainWitness(room, session.session_id)
                ]
                if stamps is not None:
                    observers.insert(0, stamps)
                recorder.seal_observer = seal_observer.Fanout(observers)
            if access is not None:
                access.session_started(room.name, recorder.prefix, target.storage)
            await recorder.start()
        except (OSError, FinrtcError) as error:
            # Recording is required for this room: a call that cannot be recorded must not start.
            log.error("cannot start recording for room %s: %s", room.name, error)
            raise CapacityError(
                f"recording is required in room {room.name!r} but cannot start: {error}"
            ) from None
        return ArchiveExtension(recorder, session, stamps)

    return create


class ComplianceExtension:
    """Script compliance for one call session: taps every audio track into the recognizer."""

    name = "compliance"

    def __init__(
        self, session: ComplianceMonitor, room: str, finished: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self.session = session
        self._room = room
        self._finished = finished

    def hook_providers(self) -> Sequence[HookProvider]:
        return (self.session.tap_provider,)

    def on_track(self, pipeline: TrackPipeline) -> None:
        pass

    def on_event(self, event: RoomEvent) -> None:
        pass

    async def close(self, clean: bool) -> None:
        # Closing publishes the final report as an event; the archive (closed after us) seals it.
        report = await self.session.close()
        self._finished(self._room, report)


FINAL_REPORTS_KEPT = 1000


class Services:
    """The session services of one server, built (and validated) before it starts."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.compliance = ComplianceRuntime.from_config(loaded)
        self.identity = IdentityRuntime(loaded.config.identity) if loaded.config.identity.enabled else None
        self._live: dict[str, ComplianceMonitor] = {}
        self._final_reports: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Compliance closes before the archive, so its final report is sealed in the recording.
        self.factories: list[ExtensionFactory] = []
        if self.compliance is not None:
            self.factories.append(self._compliance_extension)
        if self.identity is not None:
            # After compliance (its gate waits for identity), before the archive (which seals
            # the identity events emitted while closing).
            self.factories.append(self._identity_extension)
        self.timestamps = timestamp_service(loaded)
        self.archive_access: ArchiveAccess | None = None
        if loaded.config.archive.enabled:
            self.archive_access = ArchiveAccess(
                StorageTargets(loaded.config.archive, loaded.data_dir),
                load_archive_keys(loaded).signer,
            )
            self.factories.append(archive_factory(loaded, self.timestamps, self.archive_access))

    def start(self) -> None:
        if self.compliance is not None:
            self.compliance.start()
        if self.timestamps is not None:
            self.timestamps.start()

    async def close(self) -> None:
        if self.compliance is not None:
            await self.compliance.close()
        if self.timestamps is not None:
            await asyncio.to_thread(self.timestamps.close)

    async def _compliance_extension(self, room: Room, session: CallSession) -> SessionExtension | None:
        assert self.compliance is not None

        def publish(event_type: str, data: dict[str, Any], severity: Severity, audience: Any) -> object:
            return room.events.publish(event_type, data, severity=severity, audience=audience)

        compliance = self.compliance.create_session(room.name, room.policy, publish)
        if compliance is None:
            return None
        compliance.start()
        self._live[room.name] = compliance
        return ComplianceExtension(compliance, room.name, self._remember_report)

    async def _identity_extension(self, room: Room, session: CallSession) -> SessionExtension | None:
        assert self.identity is not None
        extension = await self.identity.extension(room, session)
        monitor = self._live.get(room.name)
        required = room.policy.identity.require
        if monitor is not None and extension is not None and required:
            identity = self.identity.live[room.name]
            checks = {"liveness": identity.liveness_passed, "face_match": identity.face_matched,
                      "voice_match": identity.voice_matched}
            for name in required:
                monitor.add_requirement(f"identity.{name}", checks[name])
        return extension

    def identity_recorder(self, room: str) -> SessionRecorder | None:
        """The archive recorder of the room's live call (where the ID portrait is sealed)."""
        if self.identity is None:
            return None
        session = self.identity.sessions_by_call.get(room)
        if session is None:
            return None
        return next((e.recorder for e in session.extensions if isinstance(e, ArchiveExtension)), None)

    def _remember_report(self, room: str, report: dict[str, Any]) -> None:
        self._live.pop(room, None)
        self._final_reports[room] = report
        self._final_reports.move_to_end(room)
        while len(self._final_reports) > FINAL_REPORTS_KEPT:
            self._final_reports.popitem(last=False)

    def compliance_lookup(self, room: str) -> ComplianceMonitor | dict[str, Any] | None:
        """The live session of a room, else the final report of its last call (bounded memory)."""
        return self._live.get(room) or self._final_reports.get(room)
