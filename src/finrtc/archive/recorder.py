"""Records one room session from the shared encoded packets into sealed, signed segments.

Threading: `offer`, `record_event`, `add_track`, `track_ended` and `mark_compromised` are cheap
and never block (the event loop calls `offer` for every packet: one `put_nowait` on a bounded
queue). A dedicated writer thread does everything else: hashing, muxing, encryption, signing,
fsync and storage. A full queue is not a silent drop: the loss is counted and sealed into the
chain as an `archive_overflow` alert and the session is marked compromised.

Segmentation: a segment is due after `segment_seconds` of session time. Each video track moves to
the next segment at its next keyframe (the lead forces one through `on_keyframe_needed`), audio
moves at the boundary time; once every active video track has switched the old segment is sealed.
Audio-only sessions cut at the boundary time.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import math
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.secret
import nacl.utils
from nacl.public import PublicKey, SealedBox

from finrtc.archive import archive_metrics, layout, seal_observer
from finrtc.archive.keys import Signer, fingerprint
from finrtc.archive.records import (
    FORMAT_VERSION,
    merkle_root,
    record_digest,
    record_leaf,
    seal_record,
    sha256_hex,
)
from finrtc.archive.segment import TrackMeta, build_segment, leaf_for
from finrtc.archive.settings import ArchiveConfig
from finrtc.archive.storage import LocalStorage, S3Storage, Storage
from finrtc.errors import ArchiveError
from finrtc.hooks.contract import HookEvent
from finrtc.model import EncodedPacket, MediaKind, TrackInfo
from finrtc.threads import name_native_thread

log = logging.getLogger(__name__)

_STOP = object()
# Events waiting for their segment; beyond this the recording is marked compromised.
MAX_PENDING_EVENTS = 10_000
# Ask for the boundary keyframe slightly early so the frame at/after the boundary is the keyframe.
KEYFRAME_LEAD_S = 0.05
RECORD_WRITE_ATTEMPTS = 3


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds")


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


def vp8_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 §9.1)."""
    if len(data) < 10 or data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


@dataclass
class _Segment:
    packets: list[EncodedPacket] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    start: float = math.inf

    def add(self, packet: EncodedPacket, digest: str) -> None:
        self.packets.append(packet)
        self.digests.append(digest)
        self.start = min(self.start, packet.media_time)


@dataclass
class _TrackState:
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


@dataclass
class _Event:
    type: str
    media_time: float
    severity: str
    data: dict[str, Any]
    wall_clock: float

    def to_json(self, late: bool) -> dict[str, Any]:
        value: dict[str, Any] = {
            "type": self.type,
            "media_time": round(self.media_time, 6),
            "severity": self.severity,
            "data": self.data,
            "wall_clock": self.wall_clock,
        }
        if late:
            value["late"] = True
        return value


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
        self.retention_class = retention_class
        self.retention_days = retention_days
        self.residency = residency
        self.signer = signer
        self.archive_public_keys = list(archive_public_keys)
        self.on_keyframe_needed = on_keyframe_needed
        self.segment_seconds = config.segment_seconds
        # Injection point: sees every sealed record (trusted timestamps, archive.stamper).
        self.seal_observer: seal_observer.SealObserver | None = None

        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.queue_packets)
        self._lock = threading.Lock()
        self._events: list[_Event] = []
        self._drops: dict[str, list[float]] = {}
        self._dropped_total = 0
        self._events_overflowed = 0
        self._compromise_reasons: list[str] = []
        self._tracks: dict[str, _TrackState] = {}
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._failure: BaseException | None = None

        # Keyframe request hint, written by the writer thread, read by `offer` on the loop.
        self._keyframe_due = math.inf
        self._keyframe_generation = 0
        self._keyframe_requested: dict[str, int] = {}

        # Writer-thread state.
        self._key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
        self._box = nacl.secret.SecretBox(self._key)
        self._created = time.time()
        self._retain_until = dt.datetime.fromtimestamp(self._created, dt.UTC) + dt.timedelta(
            days=retention_days
        )
        self._index = 0
        self._prev_digest = ""
        self._record_digests: list[str] = []
        self._current = _Segment()
        self._pending: _Segment | None = None
        self._switched: set[str] = set()
        self._boundary = math.inf
        self._cut = math.inf
        self._early_window = min(0.25, 0.15 * config.segment_seconds)
        self._media_start: float | None = None
        self._media_end = 0.0
        self._packets_total = 0
        self._packets_sealed = 0
        self._bytes_total = 0
        self._events_total = 0
        self.last_sealed_media_time: float | None = None
        # Recent per-segment sealing times (diagnostics, benchmark).
        self.seal_seconds: deque[float] = deque(maxlen=4096)

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
        if storage is None:
            storage = storage_from_config(config, data_dir)
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
        )

    async def start(self) -> None:
        """Write the sealed keys and the signed manifest, then start the writer thread."""
        if self._started:
            return
        await asyncio.to_thread(self._write_manifest)
        self._thread = threading.Thread(
            target=self._run, name=f"archive:{self.prefix}", daemon=True
        )
        self._started = True
        self._thread.start()

    def start_sync(self) -> None:
        """For callers without an event loop (tools, benchmarks)."""
        if not self._started:
            self._write_manifest()
            self._thread = threading.Thread(
                target=self._run, name=f"archive:{self.prefix}", daemon=True
            )
            self._started = True
            self._thread.start()

    def _put(self, name: str, data: bytes, locked: bool = True) -> None:
        self.storage.put(
            layout.join(self.prefix, name), data,
            retain_until=self._retain_until if locked else None,
        )

    def _write_manifest(self) -> None:
        sealed = []
        for public_key in self.archive_public_keys:
            recipient = fingerprint(bytes(public_key))
            name = layout.sealed_key_name(recipient)
            # Not retention-locked: purge must be able to destroy it (crypto-shredding).
            self._put(name, SealedBox(public_key).encrypt(self._key), locked=False)
            sealed.append({"file": name, "recipient": recipient})
        body = {
            "type": "manifest",
            "format": FORMAT_VERSION,
            "room": self.room,
            "session_id": self.session_id,
            "session_nonce": secrets.token_hex(16),
            "created_at": _iso(self._created),
            "created_wall": self._created,
            "retention_class": self.retention_class,
            "retention_days": self.retention_days,
            "retain_until": self._retain_until.isoformat(timespec="seconds"),
            "residency": self.residency,
            "segment_seconds": self.segment_seconds,
            "signer": {
                "fingerprint": self.signer.fingerprint,
                "public_key": base64.b64encode(self.signer.public_key).decode(),
            },
            "sealed_keys": sealed,
            "cipher": "nacl.secret.SecretBox (XSalsa20-Poly1305)",
            "digest": "sha256",
            "container": "webm (vp8, opus) behind a packet table",
            **seal_observer.extra_fields(self.seal_observer, "manifest"),
        }
        self._put(layout.MANIFEST, seal_record(body, self.signer))
        self._prev_digest = record_digest(body)
        seal_observer.sealed(self.seal_observer, layout.MANIFEST, self._prev_digest)

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
        meta = TrackMeta(
            track.track_id, track.kind, track.participant, track.role.value,
            width, height, sample_rate, channels,
        )
        with self._lock:
            if track.track_id not in self._tracks:
                self._tracks[track.track_id] = _TrackState(
                    meta, needs_keyframe=track.kind is MediaKind.VIDEO
                )
        self.record_event(
            "track_started",
            {"track_id": track.track_id, "participant": track.participant,
             "role": track.role.value, "kind": track.kind.value},
            media_time=self._media_end if media_time is None else media_time,
        )

    def offer(self, packet: EncodedPacket) -> None:
        """Hand one encoded packet to the writer; never blocks."""
        if self._closed:
            return
        if packet.kind is MediaKind.VIDEO and packet.media_time >= self._keyframe_due:
            generation = self._keyframe_generation
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
        return self._pending is not None or (self._keyframe_due < math.inf and (
            self._media_end >= self._keyframe_due
        ))

    @property
    def backlog(self) -> int:
        """Packets waiting for the writer thread."""
        return self._queue.qsize()

    @property
    def segments_sealed(self) -> int:
        return self._index

    @property
    def dropped_packets(self) -> int:
        return self._dropped_total

    def record_event(
        self, type: str, data: dict[str, Any], media_time: float, severity: str = "info"
    ) -> None:
        """Seal a compliance event into the segment covering `media_time` (session clock).

        Thread-safe; callable from hook worker threads.
        """
        event = _Event(type, float(media_time), str(severity), _json_safe(data), time.time())
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
        key = layout.join("attachments", layout.check_name(name, "attachment name"))
        ciphertext = bytes(self._box.encrypt(data))
        self._put(key, ciphertext)
        return {"file": key, "sha256": sha256_hex(data), "ciphertext_sha256": sha256_hex(ciphertext)}

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
            self._media_end if media_time is None else media_time, "alert",
        )

    def track_ended(self, track_id: str, clean: bool, reason: str | None = None) -> None:
        """A track stopped; `clean=False` (no BYE, transport lost) seals an interruption event."""
        with self._lock:
            state = self._tracks.get(track_id)
            if state is not None:
                state.ended = "clean" if clean else "unclean"
            at = state.last_time if state is not None else self._media_end
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

    def close_sync(self, reason: str = "session ended") -> None:
        if self._closed or not self._started:
            return
        self._closed = True
        self._end_reason = reason
        self._queue.put(_STOP)
        assert self._thread is not None
        self._thread.join()

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
                    self._handle(item)
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
            state = self._tracks.get(track_id)
            if state is not None and state.meta.kind is MediaKind.VIDEO:
                state.needs_keyframe = True
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
            self.record_event("events_lost", {"count": lost_events}, self._media_end, "alert")

    def _track(self, packet: EncodedPacket) -> _TrackState:
        state = self._tracks.get(packet.track_id)
        if state is None:
            # Not announced with add_track: infer what the container needs.
            meta = TrackMeta(packet.track_id, packet.kind, "unknown", "unknown")
            state = _TrackState(meta, needs_keyframe=packet.kind is MediaKind.VIDEO)
            with self._lock:
                self._tracks[packet.track_id] = state
            self.record_event(
                "track_unannounced", {"track_id": packet.track_id, "kind": packet.kind.value},
                packet.media_time, "warning",
            )
        return state

    def _handle(self, packet: EncodedPacket) -> None:
        state = self._track(packet)
        video = packet.kind is MediaKind.VIDEO
        if video and state.needs_keyframe:
            if not packet.keyframe:
                state.skipped += 1
                return
            state.needs_keyframe = False
            if state.skipped:
                self.record_event(
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
            # A container track needs strictly increasing timestamps; such a packet cannot be
            # archived, and the loss is sealed rather than hidden.
            state.backwards += 1
            self.record_event(
                "packet_not_archived",
                {"track_id": packet.track_id, "sequence": packet.sequence, "pts": packet.pts,
                 "previous_pts": state.last_pts, "reason": "timestamp not increasing"},
                packet.media_time, "warning",
            )
            return
        state.last_pts = packet.pts
        digest = hashlib.sha256(packet.data).hexdigest()
        now = packet.media_time
        if self._media_start is None:
            self._media_start = now
            self._start_segment_clock(now)
        state.packets += 1
        state.bytes += len(packet.data)
        if state.first_time is None:
            state.first_time = now
        state.last_time = max(state.last_time, now)
        self._media_end = max(self._media_end, now)
        self._packets_total += 1
        self._bytes_total += len(packet.data)

        # A keyframe shortly before the boundary (the encoder's own periodic keyframe, slightly
        # early after clock slew) starts the next segment rather than waiting a whole GOP.
        early = video and packet.keyframe and now >= self._boundary - self._early_window
        if self._pending is None and (now >= self._boundary or early) and self._current.packets:
            if self._active_video_tracks():
                self._pending = _Segment()
                self._switched = set()
                self._cut = min(now, self._boundary)
            else:
                self._seal_current(next_start=now)
        if self._pending is None:
            self._current.add(packet, digest)
            return
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
        active = self._active_video_tracks()
        grace_over = now >= self._boundary + self.segment_seconds
        if active <= self._switched or grace_over:
            if grace_over:
                for track_id in sorted(active - self._switched):
                    self.record_event(
                        "segment_without_keyframe",
                        {"track_id": track_id,
                         "detail": "no keyframe within one segment after the boundary"},
                        now, "warning",
                    )
            pending = self._pending
            self._pending = None
            self._seal_current(next_start=pending.start if pending.packets else now)
            self._current = pending

    def _active_video_tracks(self) -> set[str]:
        # add_track() may insert from the event loop meanwhile: iterate over a snapshot.
        with self._lock:
            states = list(self._tracks.items())
        return {
            track_id for track_id, state in states
            if state.meta.kind is MediaKind.VIDEO and state.ended is None and state.packets
        }

    def _start_segment_clock(self, start: float) -> None:
        self._boundary = start + self.segment_seconds
        self._keyframe_due = self._boundary - KEYFRAME_LEAD_S
        self._keyframe_generation += 1

    def _take_events(self, before: float | None) -> list[_Event]:
        with self._lock:
            if before is None:
                taken, self._events = self._events, []
            else:
                taken = [event for event in self._events if event.media_time < before]
                self._events = [event for event in self._events if event.media_time >= before]
        taken.sort(key=lambda event: event.media_time)
        return taken

    def _seal_current(self, next_start: float | None) -> None:
        segment = self._current
        self._current = _Segment()
        if next_start is not None:
            self._start_segment_clock(next_start)
        events = self._take_events(next_start)
        if not segment.packets and not events:
            return
        try:
            self._seal(segment, events)
        except Exception as error:
            # Storage down, disk full, a muxer refusal: the session goes on (later segments may
            # succeed) but is marked compromised and the failure is sealed in the chain.
            reason = f"segment {self._index} could not be sealed: {error}"
            log.error("%s", reason)
            archive_metrics.WRITE_FAILURES.inc()
            with self._lock:
                self._compromise_reasons.append(reason)
                # The events were not sealed: they go into the next record instead.
                self._events[:0] = events
            self.record_event(
                "archive_write_failed", {"error": str(error), "segment": self._index},
                segment.start if segment.packets else self._media_end, "alert",
            )

    def _seal(self, segment: _Segment, events: list[_Event]) -> None:
        started = time.perf_counter()
        self._seal_timed(segment, events)
        elapsed = time.perf_counter() - started
        archive_metrics.SEAL_SECONDS.observe(elapsed)
        archive_metrics.SEGMENTS_SEALED.inc()
        self.seal_seconds.append(elapsed)

    def _seal_timed(self, segment: _Segment, events: list[_Event]) -> None:
        order = sorted(
            range(len(segment.packets)),
            key=lambda i: (segment.packets[i].media_time, segment.packets[i].track_id,
                           segment.packets[i].sequence),
        )
        packets = [segment.packets[i] for i in order]
        digests = [segment.digests[i] for i in order]
        with self._lock:
            metas = [state.meta for state in self._tracks.values()]
        plaintext = build_segment(metas, packets, digests) if packets else b""
        leaves = [leaf_for(packet, digest) for packet, digest in zip(packets, digests, strict=True)]
        ciphertext = bytes(self._box.encrypt(plaintext))
        index = self._index
        self._put(layout.segment_name(index), ciphertext)
        tracks: dict[str, dict[str, Any]] = {}
        for packet in packets:
            info = tracks.get(packet.track_id)
            end = (packet.pts + packet.duration) * packet.time_base[0] / packet.time_base[1]
            if info is None:
                tracks[packet.track_id] = {
                    "kind": packet.kind.value, "packets": 1,
                    "first_sequence": packet.sequence, "last_sequence": packet.sequence,
                    "first_time": packet.media_time, "last_time": packet.media_time,
                    "end_time": end, "starts_with_keyframe": packet.keyframe,
                }
            else:
                info["packets"] += 1
                info["first_sequence"] = min(info["first_sequence"], packet.sequence)
                info["last_sequence"] = max(info["last_sequence"], packet.sequence)
                info["last_time"] = max(info["last_time"], packet.media_time)
                info["end_time"] = max(info["end_time"], end)
        media_start = min((p.media_time for p in packets), default=self._media_end)
        media_end = max(
            (max(info["end_time"], info["last_time"]) for info in tracks.values()),
            default=media_start,
        )
        body = {
            "type": "segment",
            "format": FORMAT_VERSION,
            "room": self.room,
            "session_id": self.session_id,
            "index": index,
            "prev": self._prev_digest,
            "segment_file": layout.segment_name(index),
            "plaintext_sha256": sha256_hex(plaintext),
            "ciphertext_sha256": sha256_hex(ciphertext),
            "ciphertext_bytes": len(ciphertext),
            "merkle_root": merkle_root(leaves),
            "packet_count": len(packets),
            "media_start": media_start,
            "media_end": media_end,
            "wall_start": min((p.wall_clock for p in packets), default=None),
            "wall_end": max((p.wall_clock for p in packets), default=None),
            "sealed_at": _iso(time.time()),
            "tracks": tracks,
            "events": [event.to_json(event.media_time < media_start) for event in events],
        }
        signed = seal_record(body, self.signer)
        for attempt in range(RECORD_WRITE_ATTEMPTS):
            try:
                self._put(layout.record_name(index), signed)
                break
            except ArchiveError:
                if attempt == RECORD_WRITE_ATTEMPTS - 1:
                    # The segment object exists but has no record: never reuse its name.
                    self._index += 1
                    raise
                time.sleep(0.2 * (attempt + 1))
        self._prev_digest = record_digest(body)
        seal_observer.sealed(self.seal_observer, layout.record_name(index), self._prev_digest)
        self._record_digests.append(self._prev_digest)
        self._events_total += len(events)
        self._packets_sealed += len(packets)
        self._index += 1
        if packets:
            self.last_sealed_media_time = media_end

    def _finish(self) -> None:
        self._collect_drops()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._seal_current(next_start=pending.start if pending.packets else None)
            self._current = pending
        self._seal_current(next_start=None)
        with self._lock:
            reasons = list(self._compromise_reasons)
            tracks = {
                track_id: {
                    **state.meta.to_json(),
                    "packets": state.packets,
                    "bytes": state.bytes,
                    "first_time": state.first_time,
                    "last_time": state.last_time,
                    "ended": state.ended or "session_end",
                }
                for track_id, state in self._tracks.items()
            }
        body = {
            "type": "final",
            "format": FORMAT_VERSION,
            "room": self.room,
            "session_id": self.session_id,
            "prev": self._prev_digest,
            "segments": self._index,
            "records_root": merkle_root([record_leaf(d) for d in self._record_digests]),
            "media_start": self._media_start if self._media_start is not None else 0.0,
            "media_end": self._media_end,
            "ended_at": _iso(time.time()),
            "end_reason": getattr(self, "_end_reason", "session ended"),
            "tracks": tracks,
            # Sealed in segments (equals the sum over the records); received may be larger when
            # a segment could not be stored.
            "packets_total": self._packets_sealed,
            "packets_received": self._packets_total,
            "bytes_total": self._bytes_total,
            "dropped_packets": self._dropped_total,
            "events_total": self._events_total,
            "compromised": bool(reasons),
            "compromise_reasons": reasons,
            **seal_observer.extra_fields(self.seal_observer, "final"),
        }
        self._put(layout.FINAL, seal_record(body, self.signer))
        seal_observer.sealed(self.seal_observer, layout.FINAL, record_digest(body))


def storage_from_config(config: ArchiveConfig, data_dir: Path) -> Storage:
    if config.storage.backend == "s3":
        if config.storage.s3 is None:
            raise ArchiveError("archive.storage.backend is 's3' but archive.storage.s3 is missing")
        return S3Storage(config.storage.s3)
    directory = Path(config.directory).expanduser()
    if not directory.is_absolute():
        directory = data_dir / directory
    return LocalStorage(directory)
