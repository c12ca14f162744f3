"""Records one room session from the shared encoded packets into sealed, signed segments.

Threading: `offer`, `record_event`, `add_track`, `track_ended` and `mark_compromised` are cheap
and never block (the event loop calls `offer` for every packet: one `put_nowait` on a bounded
queue). A dedicated writer thread does everything else: the segment boundaries (`Segmenter`)
and the hashing, muxing, encryption, signing and storage (`Sealer`). A full queue is not a silent
drop: the loss is counted and sealed into the chain as an `archive_overflow` alert and the
session is marked compromised.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.public import PublicKey

from finrtc.archive import archive_metrics, layout
from finrtc.archive.keys import Signer
from finrtc.archive.records import SealedEvent
from finrtc.archive.seal_observer import SealObserver
from finrtc.archive.sealer import Sealer
from finrtc.archive.segment import TrackMeta
from finrtc.archive.segmenter import ClosedSegment, Segmenter, TrackTable
from finrtc.archive.settings import ArchiveConfig
from finrtc.archive.storage import Storage
from finrtc.archive.targets import DEFAULT_TARGET, StorageTargets, target_name
from finrtc.errors import ArchiveError
from finrtc.hooks.contract import HookEvent
from finrtc.model import EncodedPacket, MediaKind, TrackInfo
from finrtc.threads import name_native_thread

log = logging.getLogger(__name__)

_STOP = object()
# Events waiting for their segment; beyond this the recording is marked compromised.
MAX_PENDING_EVENTS = 10_000


def _json_safe(data: Any) -> Any:
    """Plain JSON values only (the record is canonical JSON): odd types become strings."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(key): clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [clean(item) for item in value]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    return clean(data)


class SessionRecorder:
    def __init__(
        self,
        *,
        config: ArchiveConfig,
        storage: Storage,
        room: str,
        session_id: str,
        retention_class: str,
        retention_days: int,
        residency: str | None,
        signer: Signer,
        archive_public_keys: list[PublicKey],
        on_keyframe_needed: Callable[[str], None] | None = None,
        storage_target: str = DEFAULT_TARGET,
    ) -> None:
        if not archive_public_keys:
            raise ArchiveError(
                "no archive public key configured (archive.archive_public_key_files); "
                "without one the session key could never be recovered"
            )
        self.config = config
        self.storage = storage
        self.room = layout.check_name(room, "room")
        self.session_id = layout.check_name(session_id, "session id")
        self.prefix = f"{self.room}/{self.session_id}"
        self.on_keyframe_needed = on_keyframe_needed
        self.segment_seconds = config.segment_seconds

        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.queue_packets)
        self._lock = threading.Lock()
        self._events: list[SealedEvent] = []
        self._drops: dict[str, list[float]] = {}
        self._dropped_total = 0
        self._events_overflowed = 0
        self._compromise_reasons: list[str] = []
        self._tracks = TrackTable()
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._end_reason = "session ended"
        self._failure: BaseException | None = None
        # Which boundary (segmenter generation) each video track was asked a keyframe for.
        self._keyframe_requested: dict[str, int] = {}

        self._segmenter = Segmenter(config.segment_seconds, self._tracks, self.record_event)
        self._sealer = Sealer(
            storage=storage, room=self.room, session_id=self.session_id, signer=signer,
            archive_public_keys=archive_public_keys, retention_class=retention_class,
            retention_days=retention_days, residency=residency,
            segment_seconds=config.segment_seconds, storage_target=storage_target,
        )

    # ----------------------------------------------------------------------------- creation

    @classmethod
    def create(
        cls,
        config: ArchiveConfig,
        data_dir: Path,
        room: str,
        session_id: str,
        retention_class: str,
        residency: str | None,
        signer: Signer,
        archive_public_keys: list[PublicKey],
        *,
        storage: Storage | None = None,
        on_keyframe_needed: Callable[[str], None] | None = None,
    ) -> SessionRecorder:
        retention = config.retention_classes.get(retention_class)
        if retention is None:
            raise ArchiveError(
                f"retention class {retention_class!r} is not defined in "
                f"archive.retention_classes (known: {', '.join(sorted(config.retention_classes))})"
            )
        # Refuses a residency without a target before anything is written.
        target = target_name(config, residency)
        if storage is None:
            storage = StorageTargets(config, data_dir).for_residency(residency).storage
        return cls(
            config=config,
            storage=storage,
            room=room,
            session_id=session_id,
            retention_class=retention_class,
            retention_days=retention.days,
            residency=residency,
            signer=signer,
            archive_public_keys=archive_public_keys,
            on_keyframe_needed=on_keyframe_needed,
            storage_target=target,
        )

    async def start(self) -> None:
        """Write the sealed keys and the signed manifest, then start the writer thread.

        Tools without an event loop of their own use `asyncio.run(recorder.start())`.
        """
        if self._started:
            return
        await asyncio.to_thread(self._sealer.write_manifest)
        self._thread = threading.Thread(
            target=self._run, name=f"archive:{self.prefix}", daemon=True
        )
        self._started = True
        self._thread.start()

    # ------------------------------------------------------------- event-loop side (cheap)

    def add_track(
        self,
        track: TrackInfo,
        *,
        width: int = 0,
        height: int = 0,
        sample_rate: int = 48000,
        channels: int = 2,
        media_time: float | None = None,
    ) -> None:
        """Register a published track before its first packet (width/height 0 = from keyframe).

        `media_time` (session clock) dates the sealed `track_started` event.
        """
        self._tracks.announce(TrackMeta(
            track.track_id, track.kind, track.participant, track.role.value,
            width, height, sample_rate, channels,
        ))
        self.record_event(
            "track_started",
            {"track_id": track.track_id, "participant": track.participant,
             "role": track.role.value, "kind": track.kind.value},
            media_time=self._segmenter.media_end if media_time is None else media_time,
        )

    def offer(self, packet: EncodedPacket) -> None:
        """Hand one encoded packet to the writer; never blocks."""
        if self._closed:
            return
        if packet.kind is MediaKind.VIDEO and packet.media_time >= self._segmenter.keyframe_due:
            generation = self._segmenter.keyframe_generation
            if self._keyframe_requested.get(packet.track_id) != generation:
                self._keyframe_requested[packet.track_id] = generation
                if self.on_keyframe_needed is not None:
                    try:
                        self.on_keyframe_needed(packet.track_id)
                    except Exception:
                        log.exception("on_keyframe_needed failed")
        try:
            self._queue.put_nowait(packet)
        except queue.Full:
            archive_metrics.PACKETS_DROPPED.labels(kind=packet.kind.value).inc()
            with self._lock:
                self._dropped_total += 1
                window = self._drops.get(packet.track_id)
                if window is None:
                    self._drops[packet.track_id] = [1, packet.media_time, packet.media_time]
                else:
                    window[0] += 1
                    window[2] = packet.media_time

    @property
    def wants_keyframe(self) -> bool:
        """True while a segment boundary waits for video keyframes."""
        segmenter = self._segmenter
        return segmenter.waiting_for_keyframes or (
            segmenter.keyframe_due < math.inf and segmenter.media_end >= segmenter.keyframe_due
        )

    @property
    def retention_days(self) -> int:
        return self._sealer.retention_days

    @property
    def archive_public_keys(self) -> list[PublicKey]:
        """The keys the session's data key is sealed to (purge destroys those sealed copies)."""
        return self._sealer.archive_public_keys

    @property
    def seal_observer(self) -> SealObserver | None:
        """The one injection point that sees every signed record (timestamps, witness); set it
        before `start()`."""
        return self._sealer.observer

    @seal_observer.setter
    def seal_observer(self, observer: SealObserver | None) -> None:
        self._sealer.observer = observer

    @property
    def backlog(self) -> int:
        """Packets waiting for the writer thread."""
        return self._queue.qsize()

    @property
    def segments_sealed(self) -> int:
        return self._sealer.index

    @property
    def dropped_packets(self) -> int:
        return self._dropped_total

    @property
    def last_sealed_media_time(self) -> float | None:
        return self._sealer.last_sealed_media_time

    @property
    def seal_seconds(self) -> deque[float]:
        """Recent per-segment sealing times (diagnostics, benchmark)."""
        return self._sealer.seal_seconds

    def record_event(
        self, type: str, data: dict[str, Any], media_time: float, severity: str = "info"
    ) -> None:
        """Seal a compliance event into the segment covering `media_time` (session clock).

        Thread-safe; callable from hook worker threads.
        """
        event = SealedEvent(type, float(media_time), str(severity), _json_safe(data), time.time())
        with self._lock:
            if len(self._events) >= MAX_PENDING_EVENTS:
                self._events_overflowed += 1
                return
            self._events.append(event)

    def store_attachment(self, name: str, data: bytes) -> dict[str, str]:
        """Encrypt a sensitive side file (an ID portrait) with the session key and store it.

        Blocking (storage I/O): call it from a thread. Crypto-shredding the session key makes it
        unreadable with the media. Returns the digests to seal in an event, never the content.
        """
        return self._sealer.store_attachment(name, data)

    def record_hook_event(self, event: HookEvent, session_time: float | None = None) -> None:
        """Seal a hook's event; `session_time` maps the hook's track time to the session clock
        (defaults to the event's own media_time when the track clock is the session clock)."""
        data = {
            "hook": event.hook,
            "track_id": event.track.track_id,
            "participant": event.track.participant,
            "role": event.track.role.value,
            **dict(event.data),
        }
        self.record_event(
            event.type, data, event.media_time if session_time is None else session_time,
            event.severity.value,
        )

    def mark_compromised(self, reason: str, media_time: float | None = None) -> None:
        with self._lock:
            self._compromise_reasons.append(reason)
        self.record_event(
            "recording_compromised", {"reason": reason},
            self._segmenter.media_end if media_time is None else media_time, "alert",
        )

    def track_ended(self, track_id: str, clean: bool, reason: str | None = None) -> None:
        """A track stopped; `clean=False` (no BYE, transport lost) seals an interruption event."""
        state = self._tracks.end(track_id, clean)
        at = state.last_time if state is not None else self._segmenter.media_end
        if clean:
            self.record_event("track_ended", {"track_id": track_id, "reason": reason or "bye"}, at)
        else:
            self.record_event(
                "interruption",
                {"track_id": track_id,
                 "reason": reason or "participant vanished without BYE (transport lost)"},
                at, "alert",
            )

    async def close(self, reason: str = "session ended") -> None:
        """Seal the last segment and write the signed final record."""
        if self._closed or not self._started:
            return
        self._closed = True
        self._end_reason = reason
        await asyncio.to_thread(self._queue.put, _STOP)
        assert self._thread is not None
        await asyncio.to_thread(self._thread.join)
        if self._failure is not None:
            raise ArchiveError(f"archive writer for {self.prefix} failed: {self._failure}")

    # ------------------------------------------------------------------- writer thread

    def _run(self) -> None:
        name_native_thread("finrtc-archive")
        archive_metrics.RECORDINGS.inc()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    item = None
                self._collect_drops()
                if item is _STOP:
                    break
                if isinstance(item, EncodedPacket):
                    closed = self._segmenter.accept(item)
                    if closed is not None:
                        self._seal(closed)
            self._finish()
        except BaseException as error:
            self._failure = error
            log.exception("archive writer for %s failed; the session stays unsealed", self.prefix)
        finally:
            archive_metrics.RECORDINGS.dec()

    def _collect_drops(self) -> None:
        if not self._drops and not self._events_overflowed:
            return
        with self._lock:
            drops, self._drops = self._drops, {}
            lost_events, self._events_overflowed = self._events_overflowed, 0
        for track_id, (count, first, last) in drops.items():
            self._segmenter.lost_packets(track_id)
            reason = f"archive queue full: {int(count)} packets of track {track_id} lost"
            with self._lock:
                self._compromise_reasons.append(reason)
            self.record_event(
                "archive_overflow",
                {"track_id": track_id, "lost_packets": int(count),
                 "from_time": first, "to_time": last},
                first, "alert",
            )
        if lost_events:
            reason = f"{lost_events} compliance events lost (event backlog full)"
            with self._lock:
                self._compromise_reasons.append(reason)
            self.record_event(
                "events_lost", {"count": lost_events}, self._segmenter.media_end, "alert"
            )

    def _take_events(self, before: float | None) -> list[SealedEvent]:
        with self._lock:
            if before is None:
                taken, self._events = self._events, []
            else:
                taken = [event for event in self._events if event.media_time < before]
                self._events = [event for event in self._events if event.media_time >= before]
        taken.sort(key=lambda event: event.media_time)
        return taken

    def _seal(self, closed: ClosedSegment) -> None:
        segment = closed.segment
        events = self._take_events(closed.next_start)
        if not segment.packets and not events:
            return
        try:
            self._sealer.seal_segment(
                segment.packets, segment.digests, events, self._tracks.metas(),
                fallback_time=self._segmenter.media_end,
            )
        except Exception as error:
            # Storage down, disk full, a muxer refusal: the session goes on (later segments may
            # succeed) but is marked compromised and the failure is sealed in the chain.
            index = self._sealer.index
            reason = f"segment {index} could not be sealed: {error}"
            log.error("%s", reason)
            archive_metrics.WRITE_FAILURES.inc()
            with self._lock:
                self._compromise_reasons.append(reason)
                # The events were not sealed: they go into the next record instead.
                self._events[:0] = events
            self.record_event(
                "archive_write_failed", {"error": str(error), "segment": index},
                segment.start if segment.packets else self._segmenter.media_end, "alert",
            )

    def _finish(self) -> None:
        self._collect_drops()
        for closed in self._segmenter.flush():
            self._seal(closed)
        with self._lock:
            reasons = list(self._compromise_reasons)
        segmenter = self._segmenter
        self._sealer.write_final(
            media_start=segmenter.media_start if segmenter.media_start is not None else 0.0,
            media_end=segmenter.media_end,
            end_reason=self._end_reason,
            tracks=self._tracks.totals(),
            packets_received=segmenter.packets_total,
            bytes_total=segmenter.bytes_total,
            dropped_packets=self._dropped_total,
            compromise_reasons=reasons,
        )
