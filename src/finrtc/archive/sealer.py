"""Turns closed segments into the signed, encrypted chain of one session (crypto and storage).

The sealer owns the session's data key, the chain head (the digest each record links to) and the
storage writes with their retention lock and retries. It is called only from the recorder's
writer thread (and `store_attachment` from a worker thread), never from the event loop: every
method here blocks on hashing, encryption and storage I/O.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import nacl.secret
import nacl.utils
from nacl.public import PublicKey, SealedBox

from finrtc.archive import archive_metrics, layout, seal_observer
from finrtc.archive.keys import Signer, fingerprint
from finrtc.archive.merkle import merkle_root, record_leaf
from finrtc.archive.records import (
    FinalRecord,
    Manifest,
    SealedEvent,
    SealedKeyRef,
    SegmentRecord,
    SignerRef,
    StorageTargetRef,
    TrackSpan,
    TrackTotals,
    sha256_hex,
)
from finrtc.archive.seal_observer import SealObserver
from finrtc.archive.segment import TrackMeta, build_segment, leaf_for
from finrtc.archive.storage import Storage
from finrtc.errors import ArchiveError
from finrtc.model import EncodedPacket

log = logging.getLogger(__name__)

RECORD_WRITE_ATTEMPTS = 3
CONTAINER = "webm (vp8, opus) behind a packet table"


def iso_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds")


def _spans(packets: Sequence[EncodedPacket]) -> dict[str, TrackSpan]:
    spans: dict[str, TrackSpan] = {}
    for packet in packets:
        end = (packet.pts + packet.duration) * packet.time_base[0] / packet.time_base[1]
        span = spans.get(packet.track_id)
        if span is None:
            spans[packet.track_id] = TrackSpan(
                kind=packet.kind.value, packets=1,
                first_sequence=packet.sequence, last_sequence=packet.sequence,
                first_time=packet.media_time, last_time=packet.media_time,
                end_time=end, starts_with_keyframe=packet.keyframe,
            )
        else:
            spans[packet.track_id] = TrackSpan(
                kind=span.kind, packets=span.packets + 1,
                first_sequence=min(span.first_sequence, packet.sequence),
                last_sequence=max(span.last_sequence, packet.sequence),
                first_time=span.first_time, last_time=max(span.last_time, packet.media_time),
                end_time=max(span.end_time, end), starts_with_keyframe=span.starts_with_keyframe,
            )
    return spans


class Sealer:
    def __init__(
        self,
        *,
        storage: Storage,
        room: str,
        session_id: str,
        signer: Signer,
        archive_public_keys: Sequence[PublicKey],
        retention_class: str,
        retention_days: int,
        residency: str | None,
        segment_seconds: float,
        storage_target: str,
    ) -> None:
        self.storage = storage
        self.room = room
        self.session_id = session_id
        self.prefix = f"{room}/{session_id}"
        self.signer = signer
        self.archive_public_keys = list(archive_public_keys)
        self.retention_class = retention_class
        self.retention_days = retention_days
        self.residency = residency
        self.segment_seconds = segment_seconds
        self.storage_target = StorageTargetRef(name=storage_target, location=storage.describe())
        # Adds fields to the manifest / final record and is told (name, digest) after each signed
        # record is stored: the trusted-timestamp stamper and the witness (seal_observer.py).
        self.observer: SealObserver | None = None
        self._key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
        self._box = nacl.secret.SecretBox(self._key)
        self.created = time.time()
        self.retain_until = dt.datetime.fromtimestamp(self.created, dt.UTC) + dt.timedelta(
            days=retention_days
        )
        self.index = 0
        self.chain_head = ""
        self.record_digests: list[str] = []
        self.packets_sealed = 0
        self.events_sealed = 0
        self.last_sealed_media_time: float | None = None
        # Recent per-segment sealing times (diagnostics, benchmark).
        self.seal_seconds: deque[float] = deque(maxlen=4096)

    def put(self, name: str, data: bytes, locked: bool = True) -> None:
        self.storage.put(
            layout.join(self.prefix, name), data,
            retain_until=self.retain_until if locked else None,
        )

    def write_manifest(self) -> None:
        sealed = []
        for public_key in self.archive_public_keys:
            recipient = fingerprint(bytes(public_key))
            name = layout.sealed_key_name(recipient)
            # Not retention-locked: purge must be able to destroy it (crypto-shredding).
            self.put(name, SealedBox(public_key).encrypt(self._key), locked=False)
            sealed.append(SealedKeyRef(file=name, recipient=recipient))
        manifest = Manifest(
            room=self.room,
            session_id=self.session_id,
            session_nonce=secrets.token_hex(16),
            created_at=iso_time(self.created),
            created_wall=self.created,
            retention_class=self.retention_class,
            retention_days=self.retention_days,
            retain_until=self.retain_until.isoformat(timespec="seconds"),
            residency=self.residency,
            segment_seconds=self.segment_seconds,
            signer=SignerRef(
                fingerprint=self.signer.fingerprint,
                public_key=base64.b64encode(self.signer.public_key).decode(),
            ),
            sealed_keys=sealed,
            cipher="nacl.secret.SecretBox (XSalsa20-Poly1305)",
            digest="sha256",
            container=CONTAINER,
            storage_target=self.storage_target,
            **self._extra("manifest"),
        )
        stored, self.chain_head = manifest.seal(self.signer)
        self.put(layout.MANIFEST, stored)
        self._announce(layout.MANIFEST, self.chain_head)

    def store_attachment(self, name: str, data: bytes) -> dict[str, str]:
        """Encrypt a sensitive side file with the session key and store it (see the recorder)."""
        key = layout.join("attachments", layout.check_name(name, "attachment name"))
        ciphertext = bytes(self._box.encrypt(data))
        self.put(key, ciphertext)
        return {"file": key, "sha256": sha256_hex(data), "ciphertext_sha256": sha256_hex(ciphertext)}

    def seal_segment(
        self,
        packets: Sequence[EncodedPacket],
        digests: Sequence[str],
        events: Sequence[SealedEvent],
        tracks: Sequence[TrackMeta],
        fallback_time: float,
    ) -> SegmentRecord:
        """Encrypt, store and sign one segment; raises ArchiveError (or OSError) when storage fails."""
        started = time.perf_counter()
        order = sorted(
            range(len(packets)),
            key=lambda i: (packets[i].media_time, packets[i].track_id, packets[i].sequence),
        )
        packets = [packets[i] for i in order]
        digests = [digests[i] for i in order]
        plaintext = build_segment(list(tracks), packets, digests) if packets else b""
        leaves = [leaf_for(packet, digest) for packet, digest in zip(packets, digests, strict=True)]
        ciphertext = bytes(self._box.encrypt(plaintext))
        index = self.index
        self.put(layout.segment_name(index), ciphertext)
        spans = _spans(packets)
        media_start = min((p.media_time for p in packets), default=fallback_time)
        media_end = max(
            (max(span.end_time, span.last_time) for span in spans.values()), default=media_start
        )
        record = SegmentRecord(
            room=self.room,
            session_id=self.session_id,
            index=index,
            prev=self.chain_head,
            segment_file=layout.segment_name(index),
            plaintext_sha256=sha256_hex(plaintext),
            ciphertext_sha256=sha256_hex(ciphertext),
            ciphertext_bytes=len(ciphertext),
            merkle_root=merkle_root(leaves),
            packet_count=len(packets),
            media_start=media_start,
            media_end=media_end,
            wall_start=min((p.wall_clock for p in packets), default=None),
            wall_end=max((p.wall_clock for p in packets), default=None),
            sealed_at=iso_time(time.time()),
            tracks=spans,
            events=[
                SealedEvent(e.type, round(e.media_time, 6), e.severity, e.data, e.wall_clock,
                            late=e.media_time < media_start)
                for e in events
            ],
        )
        stored, digest = record.seal(self.signer)
        for attempt in range(RECORD_WRITE_ATTEMPTS):
            try:
                self.put(layout.record_name(index), stored)
                break
            except ArchiveError:
                if attempt == RECORD_WRITE_ATTEMPTS - 1:
                    # The segment object exists but has no record: never reuse its name.
                    self.index += 1
                    raise
                time.sleep(0.2 * (attempt + 1))
        self.chain_head = digest
        self._announce(layout.record_name(index), digest)
        self.record_digests.append(digest)
        self.events_sealed += len(events)
        self.packets_sealed += len(packets)
        self.index += 1
        if packets:
            self.last_sealed_media_time = media_end
        elapsed = time.perf_counter() - started
        archive_metrics.SEAL_SECONDS.observe(elapsed)
        archive_metrics.SEGMENTS_SEALED.inc()
        self.seal_seconds.append(elapsed)
        return record

    def write_final(
        self,
        *,
        media_start: float,
        media_end: float,
        end_reason: str,
        tracks: dict[str, TrackTotals],
        packets_received: int,
        bytes_total: int,
        dropped_packets: int,
        compromise_reasons: list[str],
    ) -> FinalRecord:
        record = FinalRecord(
            room=self.room,
            session_id=self.session_id,
            prev=self.chain_head,
            segments=self.index,
            records_root=merkle_root([record_leaf(d) for d in self.record_digests]),
            media_start=media_start,
            media_end=media_end,
            ended_at=iso_time(time.time()),
            end_reason=end_reason,
            tracks=tracks,
            packets_total=self.packets_sealed,
            packets_received=packets_received,
            bytes_total=bytes_total,
            dropped_packets=dropped_packets,
            events_total=self.events_sealed,
            compromised=bool(compromise_reasons),
            compromise_reasons=compromise_reasons,
            **self._extra("final"),
        )
        stored, digest = record.seal(self.signer)
        self.put(layout.FINAL, stored)
        self._announce(layout.FINAL, digest)
        return record

    def _announce(self, name: str, digest: str) -> None:
        # The record is sealed; an observer's failure is logged there, never undoes that.
        seal_observer.sealed(self.observer, name, digest)

    def _extra(self, record_type: str) -> dict[str, Any]:
        fields = seal_observer.extra_fields(self.observer, record_type)
        known = {"timestamping", "witness"} if record_type == "manifest" else {"timestamping"}
        unknown = set(fields) - known
        if unknown:
            # The record format is closed: an observer cannot sign fields no reader knows.
            log.error("seal observer offered unknown %s fields %s; ignored", record_type,
                      sorted(unknown))
        return {key: value for key, value in fields.items() if key in known}
