"""Offline verification of an archived session: trusts only the signer's public key.

Without the archive private key: signatures, chain links, ciphertext digests, the final record's
totals and the media-time continuity visible in the records. With it, also: decrypt, plaintext
digests, Merkle roots re-derived from the packet table, the WebM holding exactly the committed
packet bytes, per-packet gaps and A/V drift.

Exit codes: 0 everything holds, 1 tampered or invalid, 2 interrupted (every sealed segment valid
but no final record), 3 cannot check (unreadable key, not an archive).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nacl.exceptions
import nacl.secret
from nacl.public import PrivateKey, SealedBox
from nacl.signing import VerifyKey

from finrtc.archive import access_log, layout
from finrtc.archive.keys import fingerprint
from finrtc.archive.merkle import merkle_proof, merkle_root, merkle_verify, record_leaf
from finrtc.archive.records import (
    FORMAT_ERRORS,
    DestructionReceipt,
    FinalRecord,
    LegalHold,
    Manifest,
    Record,
    RecordError,
    SealedEvent,
    SegmentRecord,
    open_record,
    open_typed,
    record_digest,
    sha256_hex,
)
from finrtc.archive.segment import (
    ParsedSegment,
    SegmentFormatError,
    check_container,
    split_segment,
)
from finrtc.archive.storage import TEMP_MARKER, Storage
from finrtc.archive.timestamping import token_name
from finrtc.archive.verify_stamps import StampOptions, check_stamps, session_records
from finrtc.archive.verify_witness import check_witness

_R = TypeVar("_R", bound=Record)

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_INTERRUPTED = 2
EXIT_CANNOT_CHECK = 3

ERROR = "error"
INTERRUPTION = "interruption"
WARNING = "warning"
INFO = "info"

# Event types that explain a gap in media time (the server sealed why media is missing).
GAP_EXPLAINING_EVENTS = frozenset({
    "interruption", "archive_overflow", "track_ended", "track_started", "recording_compromised",
    "video_skipped_to_keyframe", "archive_write_failed", "participant_left", "participant_joined",
    "media_paused", "events_lost",
})

Progress = Callable[[int, int], None]


@dataclass
class Finding:
    severity: str
    code: str
    message: str
    segment: int | None = None
    media_time: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity, "code": self.code, "message": self.message,
            "segment": self.segment, "media_time": self.media_time,
        }

    def line(self) -> str:
        where = []
        if self.segment is not None:
            where.append(f"segment {self.segment}")
        if self.media_time is not None:
            where.append(f"t={self.media_time:.3f}s")
        place = f" [{', '.join(where)}]" if where else ""
        return f"{self.severity.upper():12} {self.code}{place}: {self.message}"


@dataclass
class VerifyOptions:
    max_gap_s: float = 1.0
    max_drift_s: float = 0.3
    segment: int | None = None
    # With trusted TSA certificates (--tsa-cert): every record's RFC 3161 token is checked.
    stamps: StampOptions | None = None
    # Chain heads received by an outside witness (--witness): compared record by record.
    witness: list[dict[str, Any]] | None = None


@dataclass
class VerifyReport:
    source: str
    room: str | None = None
    session_id: str | None = None
    residency: str | None = None
    # {"name", "location"} of the archive target the manifest says it was written to.
    storage_target: dict[str, str] | None = None
    findings: list[Finding] = field(default_factory=list)
    segments_total: int = 0
    segments_valid: int = 0
    content_checked: bool = False
    keys_destroyed: dict[str, Any] | None = None
    legal_hold: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    media_start: float | None = None
    last_sealed_media_time: float | None = None
    compromised: bool = False
    proof: dict[str, Any] | None = None
    cannot_check: bool = False
    valid_segments: list[int] = field(default_factory=list)
    timestamps: dict[str, Any] | None = None
    access_log: dict[str, Any] | None = None
    witness: dict[str, Any] | None = None

    def add(self, severity: str, code: str, message: str, segment: int | None = None,
            media_time: float | None = None) -> None:
        self.findings.append(Finding(severity, code, message, segment, media_time))

    @property
    def exit_code(self) -> int:
        if self.cannot_check:
            return EXIT_CANNOT_CHECK
        if any(f.severity == ERROR for f in self.findings):
            return EXIT_INVALID
        if any(f.severity == INTERRUPTION for f in self.findings):
            return EXIT_INTERRUPTED
        return EXIT_OK

    @property
    def status(self) -> str:
        return {
            EXIT_OK: "valid", EXIT_INVALID: "tampered_or_invalid",
            EXIT_INTERRUPTED: "interrupted", EXIT_CANNOT_CHECK: "cannot_check",
        }[self.exit_code]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "status": self.status,
            "exit_code": self.exit_code,
            "room": self.room,
            "session_id": self.session_id,
            "residency": self.residency,
            "storage_target": self.storage_target,
            "segments_total": self.segments_total,
            "segments_valid": self.segments_valid,
            "content_checked": self.content_checked,
            "keys_destroyed": self.keys_destroyed,
            "legal_hold": self.legal_hold,
            "final_record": self.final is not None,
            "compromised": self.compromised,
            "media_start": self.media_start,
            "last_sealed_media_time": self.last_sealed_media_time,
            "findings": [finding.to_json() for finding in self.findings],
            "proof": self.proof,
            "timestamps": self.timestamps,
            "access_log": self.access_log,
            "witness": self.witness,
        }

    def summary(self) -> str:
        lines = [f"finrtc verify: {self.source}"]
        if self.room is not None:
            lines.append(f"  session {self.room}/{self.session_id}")
        if self.storage_target is not None:
            lines.append(f"  stored in target {self.storage_target['name']} "
                         f"({self.storage_target['location']}), residency {self.residency or 'none'}")
        headline = {
            "valid": "VALID: every signature, link and digest holds",
            "tampered_or_invalid": "INVALID: the archive was altered or is damaged",
            "interrupted": "INTERRUPTED: every sealed segment is valid but the session has no "
            "final record",
            "cannot_check": "CANNOT CHECK",
        }[self.status]
        lines.append(f"  result: {headline} (exit {self.exit_code})")
        lines.append(
            f"  segments: {self.segments_valid} valid of {self.segments_total}"
            + (f" (single segment {self.proof['segment']})" if self.proof else "")
        )
        if self.last_sealed_media_time is not None:
            lines.append(f"  sealed media until t={self.last_sealed_media_time:.3f}s")
        if self.keys_destroyed is not None:
            lines.append(
                "  KEYS DESTROYED: the session key was crypto-shredded at "
                f"{self.keys_destroyed.get('destroyed_at')} (signed receipt); the media can no "
                "longer be decrypted, only its integrity can be checked"
            )
        lines.append(
            "  content: "
            + ("decrypted, digests, Merkle roots and containers checked" if self.content_checked
               else "not decrypted (signatures, chain and ciphertext digests only)")
        )
        if self.legal_hold and self.legal_hold.get("on"):
            lines.append(f"  LEGAL HOLD: {self.legal_hold.get('reason')}")
        if self.compromised:
            lines.append("  RECORDING MARKED COMPROMISED by the server (see findings)")
        if self.access_log is not None:
            lines.append(f"  access log: {len(self.access_log['entries'])} entries, chain "
                         + ("holds" if self.access_log["holds"] else "BROKEN"))
        if self.witness is not None:
            lines.append(f"  witness: {self.witness['matched']} of {self.witness['witnessed']} "
                         f"witnessed records match, {len(self.witness['unwitnessed'])} never "
                         "witnessed")
        if self.timestamps is not None:
            counts = self.timestamps["counts"]
            lines.append(
                f"  timestamps: {counts.get('stamped', 0)} stamped, "
                f"{counts.get('stamped_late', 0)} late, {counts.get('covered', 0)} anchored by a "
                f"later token, {counts.get('missing', 0) + counts.get('too_late', 0)} missing, "
                f"{counts.get('invalid', 0)} invalid "
                f"(TSA {', '.join(self.timestamps['tsa']) or 'none valid'})"
            )
        for finding in self.findings:
            lines.append("  " + finding.line())
        return "\n".join(lines)


class _SessionReader:
    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix
        self.keys = [
            key[len(prefix) + 1 :] if prefix else key for key in storage.list_keys(prefix)
        ]

    def get(self, name: str) -> bytes | None:
        try:
            return self.storage.get(layout.join(self.prefix, name))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def indexed(self, folder: str, suffix: str) -> dict[int, str]:
        found: dict[int, str] = {}
        for name in self.keys:
            if not name.startswith(folder + "/") or TEMP_MARKER in name:
                continue
            stem = name[len(folder) + 1 :]
            if stem.endswith(suffix) and stem[: -len(suffix)].isdigit():
                found[int(stem[: -len(suffix)])] = name
        return found


@dataclass
class _SegmentState:
    index: int
    record: SegmentRecord
    # The stored body (digests and token checks are over it, never over a re-encoding).
    body: dict[str, Any]
    digest: str
    valid: bool
    packets: list[tuple[str, float, float, float]] = field(default_factory=list)
    # (track_id, media_time, end_time, wall_clock) per packet, only with the content key


class Verifier:
    def __init__(
        self,
        storage: Storage,
        prefix: str,
        verify_key: VerifyKey,
        archive_key: PrivateKey | None = None,
        options: VerifyOptions | None = None,
        progress: Progress | None = None,
        source: str | None = None,
    ) -> None:
        self.reader = _SessionReader(storage, prefix)
        self.verify_key = verify_key
        self.archive_key = archive_key
        self.options = options or VerifyOptions()
        self.progress = progress
        self.report = VerifyReport(source or layout.join(storage.describe(), prefix))
        self.box: nacl.secret.SecretBox | None = None
        self.manifest: Manifest | None = None
        self.manifest_body: dict[str, Any] = {}
        self.manifest_digest = ""
        self.tracks: dict[str, dict[str, Any]] = {}
        self._last_end = 0.0

    # --------------------------------------------------------------------------- entry

    def run(self) -> VerifyReport:
        report = self.report
        if not self._load_manifest():
            return report
        self._load_side_files()
        self._check_access_log()
        self._open_content_key()
        if self.options.segment is not None:
            self._verify_single(self.options.segment)
        else:
            self._verify_all()
        return report

    def _load_manifest(self) -> bool:
        report = self.report
        data = self.reader.get(layout.MANIFEST)
        if data is None:
            report.cannot_check = True
            report.add(ERROR, "not_an_archive",
                       f"no {layout.MANIFEST} in {report.source}: not a finrtc session folder "
                       "(expected <archive dir>/<room>/<session-id>/)")
            return False
        try:
            self.manifest_body = open_record(data, self.verify_key)
            manifest = Manifest.from_json(self.manifest_body)
            digest = record_digest(self.manifest_body)
        except RecordError as error:
            code = "invalid" if error.code in FORMAT_ERRORS else error.code
            # Without a trustworthy manifest nothing else can be bound to the session.
            report.add(ERROR, f"manifest_{code}", f"manifest: {error}")
            return False
        self.manifest, self.manifest_digest = manifest, digest
        report.room = manifest.room
        report.session_id = manifest.session_id
        report.residency = manifest.residency
        target = manifest.storage_target
        if target is not None:
            report.storage_target = {"name": target.name, "location": target.location}
            if manifest.residency is not None and target.name != manifest.residency:
                report.add(ERROR, "residency_mismatch",
                           f"the session's residency is {manifest.residency!r} but the server "
                           f"wrote it to target {target.name!r} ({target.location})")
        return True

    def _load_side_files(self) -> None:
        report = self.report
        for name in self.reader.keys:
            if TEMP_MARKER in name:
                report.add(WARNING, "half_written_file",
                           f"{name} is a temporary file left by an interrupted write; it is "
                           "ignored and never counted as sealed")
        destruction = self.reader.get(layout.DESTRUCTION)
        if destruction is not None:
            try:
                receipt, _digest = open_typed(destruction, self.verify_key, DestructionReceipt)
            except RecordError as error:
                report.add(ERROR, f"receipt_{error.code}", f"destruction receipt: {error}")
            else:
                if (receipt.room, receipt.session_id) != (report.room, report.session_id):
                    report.add(ERROR, "receipt_foreign",
                               "the destruction receipt belongs to another session")
                else:
                    report.keys_destroyed = {
                        "destroyed_at": receipt.destroyed_at,
                        "keys": [dataclasses.asdict(key) for key in receipt.destroyed_keys],
                        "reason": receipt.reason,
                    }
                    report.add(INFO, "keys_destroyed",
                               f"session keys destroyed at {receipt.destroyed_at} "
                               "(crypto-shredded after retention); media cannot be decrypted")
        hold = self.reader.get(layout.LEGAL_HOLD)
        if hold is not None:
            try:
                marker, _digest = open_typed(hold, self.verify_key, LegalHold)
                report.legal_hold = {"on": True, "reason": marker.reason,
                                     "since": marker.placed_at}
            except RecordError as error:
                report.add(WARNING, "legal_hold_unverified", f"legal hold marker: {error}")

    def _check_access_log(self) -> None:
        assert self.manifest is not None
        if not any(name.startswith(access_log.ACCESS_DIR + "/") for name in self.reader.keys):
            return
        checked = access_log.check(self.reader.storage, self.reader.prefix, self.manifest_body)
        self.report.access_log = checked.to_json()
        for _seq, code, message in checked.problems:
            self.report.add(ERROR, code, f"access log: {message}")

    def _open_content_key(self) -> None:
        report = self.report
        if self.archive_key is None or self.manifest is None:
            return
        recipient = fingerprint(bytes(self.archive_key.public_key))
        entry = self.manifest.sealed_key_for(recipient)
        if entry is None:
            recipients = ", ".join(item.recipient for item in self.manifest.sealed_keys)
            report.cannot_check = True
            report.add(ERROR, "not_a_recipient",
                       f"the archive key {recipient} is not one this session was sealed to "
                       f"(recipients: {recipients})")
            return
        sealed = self.reader.get(entry.file)
        if sealed is None:
            if report.keys_destroyed is None:
                report.add(ERROR, "sealed_key_missing",
                           f"{entry.file} is missing and there is no destruction receipt")
            else:
                report.add(INFO, "content_not_checkable",
                           "the archive key was given but the session key was destroyed: "
                           "content checks are impossible by design")
            return
        try:
            data_key = SealedBox(self.archive_key).decrypt(sealed)
            self.box = nacl.secret.SecretBox(data_key)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            report.add(ERROR, "sealed_key_invalid",
                       f"{entry.file} cannot be opened with the archive key (altered?)")
            return
        report.content_checked = True

    # ------------------------------------------------------------------ per segment

    def _check_segment(self, index: int, name: str, prev: str | None) -> _SegmentState | None:
        """Verify record `index` (and its segment); None when the record is unusable."""
        report = self.report
        # Until the record is authenticated, the best time is where the last good one ended.
        after = self._last_end
        data = self.reader.get(name)
        if data is None:
            report.add(ERROR, "record_missing", f"{name} cannot be read", index, after)
            return None
        try:
            body = open_record(data, self.verify_key)
        except RecordError as error:
            report.add(ERROR, error.code, f"record {name}: {error} (media after t={after:.3f}s)",
                       index, after)
            return None
        try:
            record = SegmentRecord.from_json(body)
        except RecordError as error:
            # Signed by the server's key yet not a segment record of this format.
            report.add(ERROR, "record_invalid", f"{name}: {error}", index, after)
            return None
        state = _SegmentState(index, record, body, record_digest(body), valid=True)
        at = record.media_start
        self._last_end = record.media_end

        def fail(code: str, message: str) -> None:
            state.valid = False
            report.add(ERROR, code, message, index, at)

        if (record.room, record.session_id) != (report.room, report.session_id):
            fail("foreign_record",
                 f"record belongs to session {record.room}/{record.session_id}, "
                 "not this one (segments swapped between sessions?)")
        if record.index != index:
            fail("record_out_of_place",
                 f"{name} holds the record of segment {record.index} "
                 "(segments duplicated or reordered)")
        if prev is not None and record.prev != prev:
            fail("chain_broken",
                 "the link to the previous record does not match: a segment before this one was "
                 "removed, inserted or reordered")
        segment_file = layout.segment_name(index)
        if record.segment_file != segment_file:
            fail("record_out_of_place", f"record names {record.segment_file}")
        ciphertext = self.reader.get(segment_file)
        if ciphertext is None:
            fail("segment_missing", f"{segment_file} is missing (record {index} is sealed)")
            return state
        if sha256_hex(ciphertext) != record.ciphertext_sha256:
            detail = (
                f"size {len(ciphertext)} bytes, sealed {record.ciphertext_bytes}"
                if len(ciphertext) != record.ciphertext_bytes else "same size, bytes differ"
            )
            fail("ciphertext_mismatch",
                 f"{segment_file} differs from its sealed digest ({detail}): altered, truncated "
                 "or replaced")
            return state
        if self.box is not None:
            self._check_content(state, ciphertext, fail)
        return state

    def _check_content(
        self, state: _SegmentState, ciphertext: bytes, fail: Callable[[str, str], None]
    ) -> None:
        assert self.box is not None
        record = state.record
        try:
            plaintext = self.box.decrypt(ciphertext)
        except nacl.exceptions.CryptoError:
            fail("decrypt_failed",
                 "the segment does not decrypt with this session's key (from another session?)")
            return
        if sha256_hex(plaintext) != record.plaintext_sha256:
            fail("plaintext_mismatch",
                 "decrypted content differs from the sealed plaintext digest (re-encrypted "
                 "after alteration)")
            return
        if record.packet_count == 0 and not plaintext:
            return
        try:
            parsed = split_segment(plaintext)
        except SegmentFormatError as error:
            fail("segment_malformed", str(error))
            return
        root = merkle_root([packet.leaf() for packet in parsed.packets])
        if root != record.merkle_root:
            fail("merkle_mismatch", "the packet table does not reproduce the sealed Merkle root")
        if len(parsed.packets) != record.packet_count:
            fail("packet_count_mismatch",
                 f"{len(parsed.packets)} packets, record says {record.packet_count}")
        for problem in check_container(parsed):
            fail("container_mismatch", problem)
        for track in parsed.tracks:
            self.tracks.setdefault(str(track.get("track_id")), track)
        state.packets = [
            (packet.track_id, packet.media_time, packet.end_time, packet.wall_clock)
            for packet in parsed.packets
        ]

    # --------------------------------------------------------------------- whole session

    def _verify_all(self) -> None:
        report = self.report
        assert self.manifest is not None
        records = self.reader.indexed(layout.RECORDS_DIR, ".json")
        segments = self.reader.indexed(layout.SEGMENTS_DIR, ".seg")
        count = max(records) + 1 if records else 0
        report.segments_total = count
        prev: str | None = self.manifest_digest
        states: list[_SegmentState] = []
        present = sorted(records)
        position = 0
        index = 0
        while index < count:
            if self.progress is not None:
                self.progress(index, count)
            name = records.get(index)
            if name is None:
                # One finding per run of missing records (a forged far index stays one line).
                while position < len(present) and present[position] < index:
                    position += 1
                upto = present[position] if position < len(present) else count
                what = f"record {index} is" if upto == index + 1 else (
                    f"records {index}..{upto - 1} are")
                report.add(ERROR, "segment_missing",
                           f"{what} missing: segments were removed from the chain "
                           f"(media after t={self._last_end:.3f}s)", index, self._last_end)
                prev = None
                index = upto
                continue
            current = index
            index += 1
            state = self._check_segment(current, name, prev)
            if state is None:
                prev = None
                continue
            prev = state.digest
            states.append(state)
            if state.valid:
                report.segments_valid += 1
                report.valid_segments.append(current)
                report.last_sealed_media_time = state.record.media_end
                if report.media_start is None:
                    report.media_start = state.record.media_start
        if self.progress is not None:
            self.progress(count, count)
        for index in sorted(set(segments) - set(records)):
            report.add(WARNING, "unsealed_segment",
                       f"{segments[index]} has no signed record (written just before an "
                       "interruption); it is not part of the sealed archive", index)
        self._check_final(states, count, prev)
        if self.options.stamps is not None:
            self._check_stamps(states, self.options.stamps, self.report.final)
        if self.options.witness is not None:
            self._check_witness(states, self.options.witness)
        self._check_continuity(states)
        self._report_events(states)

    def _check_final(self, states: list[_SegmentState], count: int, last: str | None) -> None:
        report = self.report
        data = self.reader.get(layout.FINAL)
        if data is None:
            when = report.last_sealed_media_time
            report.add(INTERRUPTION, "no_final_record",
                       "the session has no final record: it was interrupted (server crash or "
                       "kill) or the final record was removed; "
                       + (f"last sealed media at t={when:.3f}s" if when is not None
                          else "no media was sealed"),
                       media_time=when)
            return
        try:
            body = open_record(data, self.verify_key)
            final = FinalRecord.from_json(body)
        except RecordError as error:
            report.add(ERROR, f"final_{error.code}", f"final record: {error}")
            return
        report.final = body

        if (final.room, final.session_id) != (report.room, report.session_id):
            report.add(ERROR, "final_foreign", "the final record belongs to another session")
            return
        if final.segments != count:
            report.add(ERROR, "final_count_mismatch",
                       f"the final record seals {final.segments} segments, "
                       f"{count} are present (segments truncated or appended)")
        if last is not None and final.prev != last:
            report.add(ERROR, "final_link_broken",
                       "the final record does not link to the last segment record")
        digests = [state.digest for state in states]
        if len(digests) == count and final.records_root != merkle_root(
            [record_leaf(d) for d in digests]
        ):
            report.add(ERROR, "final_root_mismatch",
                       "the records' Merkle root differs from the one in the final record")
        packets = sum(state.record.packet_count for state in states)
        if len(states) == count and final.packets_total != packets:
            report.add(ERROR, "final_totals_mismatch",
                       f"final record counts {final.packets_total} packets, segments hold "
                       f"{packets}")
        if final.compromised:
            report.compromised = True
            for reason in final.compromise_reasons:
                report.add(WARNING, "recording_compromised", reason)
        if final.dropped_packets:
            report.add(WARNING, "packets_lost",
                       f"{final.dropped_packets} packets never reached the archive "
                       "(sealed as archive_overflow events)")

    def _check_witness(self, states: list[_SegmentState], heads: list[dict[str, Any]]) -> None:
        assert self.manifest is not None
        final = self.report.final
        records = session_records(
            self.manifest_body, self.manifest_digest,
            [(state.index, state.body, state.digest) for state in states],
            (final, record_digest(final)) if final is not None else None,
        )
        self.report.witness = check_witness(
            records, heads, str(self.report.room), str(self.report.session_id),
            lambda severity, code, message, segment: self.report.add(
                severity, code, message, segment),
        )

    def _check_stamps(self, states: list[_SegmentState], options: StampOptions,
                      final: dict[str, Any] | None) -> None:
        assert self.manifest is not None
        records = session_records(
            self.manifest_body, self.manifest_digest,
            [(state.index, state.body, state.digest) for state in states],
            (final, record_digest(final)) if final is not None else None,
        )
        plan = self.manifest_body.get("timestamping")
        self.report.timestamps = check_stamps(
            records, self.reader.keys, self.reader.get, options,
            lambda severity, code, message, segment: self.report.add(
                severity, code, message, segment),
            plan if isinstance(plan, dict) else None,
            interrupted=final is None,
        )

    def _events(self, states: list[_SegmentState]) -> Iterator[tuple[int, SealedEvent]]:
        for state in states:
            for event in state.record.events:
                yield state.index, event

    def _explained(self, states: list[_SegmentState], start: float, end: float,
                   track_id: str | None) -> bool:
        margin = max(1.0, self.options.max_gap_s)
        for _index, event in self._events(states):
            if event.type not in GAP_EXPLAINING_EVENTS:
                continue
            if not start - margin <= event.media_time <= end + margin:
                continue
            if track_id is None or event.track_id in (None, track_id):
                return True
        return False

    def _gap(self, states: list[_SegmentState], start: float, end: float,
             track_id: str | None, segment: int) -> None:
        what = f"track {track_id}" if track_id else "the session"
        if self._explained(states, start, end, track_id):
            self.report.add(WARNING, "gap",
                            f"{what} has no media for {end - start:.3f}s "
                            f"({start:.3f}s..{end:.3f}s); the server sealed the reason",
                            segment, start)
        else:
            self.report.add(ERROR, "unexplained_gap",
                            f"{what} has no media for {end - start:.3f}s "
                            f"({start:.3f}s..{end:.3f}s) and no sealed event explains it",
                            segment, start)

    def _check_continuity(self, states: list[_SegmentState]) -> None:
        limit = self.options.max_gap_s
        valid = [state for state in states if state.valid]
        # Session level, from the signed records alone (works without the content key).
        for before, after in itertools.pairwise(valid):
            if after.index != before.index + 1:
                continue
            end, start = before.record.media_end, after.record.media_start
            if start - end > limit:
                self._gap(states, end, start, None, after.index)
        if not self.report.content_checked:
            return
        # Per track, from the packet tables.
        last: dict[str, tuple[float, int]] = {}
        for state in valid:
            for track_id, media_time, end_time, _wall in state.packets:
                previous = last.get(track_id)
                if previous is not None and media_time - previous[0] > limit:
                    self._gap(states, previous[0], media_time, track_id, state.index)
                last[track_id] = (max(media_time, end_time), state.index)
        self._check_drift(valid)

    def _check_drift(self, valid: list[_SegmentState]) -> None:
        """A/V drift on the session clock.

        Players show video frames at their timestamps but play audio sample after sample, so
        every millisecond by which an audio track's timestamps run ahead of (or behind) the
        audio it actually holds shifts sound against picture. That difference is accumulated
        per audio track; a gap beyond `max_gap_s` is reported as a gap and restarts the count.
        (Wall-clock times are not used: they include the server's processing lag, which says
        nothing about the recording's sync.)
        """
        limit = self.options.max_drift_s
        kinds = {tid: str(track.get("kind")) for tid, track in self.tracks.items()}
        owners = {tid: str(track.get("participant")) for tid, track in self.tracks.items()}
        last_end: dict[str, float] = {}
        drift: dict[str, float] = {}
        for state in valid:
            for track_id, media_time, end_time, _wall in state.packets:
                if kinds.get(track_id) != "audio" or end_time <= media_time:
                    continue
                previous = last_end.get(track_id)
                last_end[track_id] = end_time
                if previous is None:
                    continue
                step = media_time - previous
                if abs(step) > self.options.max_gap_s:
                    drift[track_id] = 0.0
                    continue
                total = drift.get(track_id, 0.0) + step
                if abs(total) > limit:
                    self.report.add(
                        ERROR, "av_drift",
                        f"audio track {track_id} of {owners.get(track_id, '?')} has drifted "
                        f"{total * 1000:+.0f} ms against its video (its timestamps "
                        f"{'skip ahead of' if total > 0 else 'fall behind'} the audio it holds; "
                        f"bound {limit * 1000:.0f} ms)",
                        state.index, media_time)
                    total = 0.0
                drift[track_id] = total

    def _report_events(self, states: list[_SegmentState]) -> None:
        for index, event in self._events(states):
            if event.severity in ("alert", "warning") and event.type != "recording_compromised":
                self.report.add(
                    WARNING, f"event:{event.type}",
                    f"sealed {event.severity} event: {event.data}", index, event.media_time,
                )

    # ------------------------------------------------------------------ single segment

    def _verify_single(self, target: int) -> None:
        report = self.report
        assert self.manifest is not None
        records = self.reader.indexed(layout.RECORDS_DIR, ".json")
        count = max(records) + 1 if records else 0
        report.segments_total = 1
        if target not in records:
            report.cannot_check = True
            report.add(ERROR, "no_such_segment",
                       f"segment {target} has no record (the session has {count})")
            return
        # Digests of the other records (bodies only; their media is not read).
        digests: dict[int, str] = {}
        for index, name in records.items():
            data = self.reader.get(name)
            if data is None:
                continue
            try:
                digests[index] = record_digest(open_record(data, self.verify_key))
            except RecordError:
                continue
        prev = digests.get(target - 1) if target > 0 else self.manifest_digest
        state = self._check_segment(target, records[target], prev)
        if target > 0 and (target - 1) not in digests:
            report.add(ERROR, "chain_broken", "the previous record is missing or invalid", target)
        if state is None:
            return
        proof: dict[str, Any] = {"segment": target, "record_digest": state.digest,
                                 "prev": state.record.prev}
        final_data = self.reader.get(layout.FINAL)
        if final_data is not None:
            try:
                final, final_digest = open_typed(final_data, self.verify_key, FinalRecord)
            except RecordError as error:
                report.add(ERROR, f"final_{error.code}", f"final record: {error}")
                return
            ordered = [digests.get(i) for i in range(final.segments)]
            if None in ordered:
                report.add(ERROR, "proof_incomplete",
                           "some records are missing; the inclusion path cannot be built")
                return
            leaves = [record_leaf(str(d)) for d in ordered]
            path = merkle_proof(leaves, target) if target < len(leaves) else []
            root = final.records_root
            proof.update(records_root=root, path=path, final_record_digest=final_digest,
                         leaf_count=len(leaves))
            if target >= len(leaves) or not merkle_verify(record_leaf(state.digest), path, root):
                report.add(ERROR, "proof_invalid",
                           "the segment record is not included in the final record's Merkle root",
                           target)
        else:
            # Interrupted session: membership is shown by the chain of links to the last record.
            chain_ok = all(
                i in digests for i in range(target, count)
            ) and all(
                self._prev_of(records[i + 1]) == digests[i] for i in range(target, count - 1)
            )
            proof.update(chain_to=count - 1, chain_ok=chain_ok)
            if not chain_ok:
                report.add(ERROR, "chain_broken", "the chain after this segment is broken", target)
            report.add(INTERRUPTION, "no_final_record",
                       "the session has no final record; the segment is proven by its chain links")
        report.proof = proof
        if self.options.stamps is not None:
            # The segment's own token, and the final record's, which anchors it too.
            final_body = None
            if final_data is not None:
                with contextlib.suppress(RecordError):
                    final_body = open_record(final_data, self.verify_key)
            self._check_stamps([state], self.options.stamps, final_body)
        if state.valid:
            report.segments_valid = 1
            report.valid_segments.append(target)
            report.last_sealed_media_time = state.record.media_end

    def _prev_of(self, name: str) -> str | None:
        data = self.reader.get(name)
        if data is None:
            return None
        try:
            return open_typed(data, self.verify_key, SegmentRecord)[0].prev
        except RecordError:
            return None


def verify_session(
    storage: Storage,
    prefix: str,
    verify_key: VerifyKey,
    archive_key: PrivateKey | None = None,
    options: VerifyOptions | None = None,
    progress: Progress | None = None,
    source: str | None = None,
) -> VerifyReport:
    return Verifier(storage, prefix, verify_key, archive_key, options, progress, source).run()


def decrypt_segment(storage: Storage, prefix: str, index: int,
                    box: nacl.secret.SecretBox) -> ParsedSegment:
    plaintext = box.decrypt(storage.get(layout.join(prefix, layout.segment_name(index))))
    return split_segment(plaintext)


def open_data_key(storage: Storage, prefix: str, manifest: Manifest,
                  archive_key: PrivateKey) -> nacl.secret.SecretBox:
    entry = manifest.sealed_key_for(fingerprint(bytes(archive_key.public_key)))
    if entry is None:
        raise FileNotFoundError("no sealed key for this archive key")
    sealed = storage.get(layout.join(prefix, entry.file))
    return nacl.secret.SecretBox(SealedBox(archive_key).decrypt(sealed))


# ------------------------------------------------------------------------ clip packages
# A clip package lets an auditor who receives one segment prove, without the rest of the
# archive and without any private key, that it is authentic and belongs to its session:
#
#   manifest.json  record.json  final.json (if the session ended cleanly)
#   segment.bin    the decrypted segment plaintext (packet table + WebM)
#   clip.webm      the playable WebM inside segment.bin
#   proof.json     {"segment": K, "path": [...], "records_root": ..., "leaf_count": N}

CLIP_PROOF = "proof.json"
CLIP_FILES = ("manifest.json", "record.json", "final.json", "segment.bin", "clip.webm", CLIP_PROOF)
# Time-stamp tokens of manifest.json, record.json and final.json, when the session had them.
CLIP_TOKENS = ("manifest.tst", "record.tst", "final.tst")


def is_clip_package(path: Path) -> bool:
    return (path / CLIP_PROOF).is_file() and (path / "segment.bin").is_file()


def verify_clip_package(path: Path, verify_key: VerifyKey,
                        stamps: StampOptions | None = None) -> VerifyReport:
    report = VerifyReport(str(path))
    report.segments_total = 1

    def read(name: str) -> bytes | None:
        try:
            return (path / name).read_bytes()
        except FileNotFoundError:
            return None

    def signed(name: str, kind: type[_R]) -> tuple[_R, str] | None:
        data = read(name)
        if data is None:
            return None
        try:
            return open_typed(data, verify_key, kind)
        except RecordError as error:
            report.add(ERROR, f"{name.split('.')[0]}_{error.code}", f"{name}: {error}")
            return None

    try:
        proof = json.loads(read(CLIP_PROOF) or b"")
        target = int(proof["segment"])
    except (ValueError, KeyError, TypeError):
        report.cannot_check = True
        report.add(ERROR, "not_a_clip_package", f"{path / CLIP_PROOF} is not a clip proof")
        return report
    signed_manifest = signed("manifest.json", Manifest)
    signed_record = signed("record.json", SegmentRecord)
    if signed_manifest is None or signed_record is None:
        if not report.findings:
            report.cannot_check = True
            report.add(ERROR, "not_a_clip_package", "manifest.json or record.json is missing")
        return report
    manifest, record, digest = signed_manifest[0], *signed_record
    report.room, report.session_id = manifest.room, manifest.session_id
    start = record.media_start

    def fail(code: str, message: str) -> None:
        report.add(ERROR, code, message, target, start)

    if (record.room, record.session_id) != (report.room, report.session_id):
        fail("foreign_record", "the segment record belongs to another session")
    if record.index != target:
        fail("record_out_of_place", f"record is not the record of segment {target}")
    report.proof = {"segment": target, "record_digest": digest, "prev": record.prev}
    signed_final = signed("final.json", FinalRecord)
    if signed_final is None and read("final.json") is None:
        report.add(INTERRUPTION, "no_final_record",
                   "the session has no final record; the segment is proven by its signed "
                   "record alone (session id and chain link)", target, start)
    elif signed_final is not None:
        final, final_digest = signed_final
        root = final.records_root
        path_steps = proof.get("path") or []
        report.proof.update(records_root=root, path=path_steps, final_record_digest=final_digest)
        if (final.room, final.session_id) != (report.room, report.session_id):
            fail("final_foreign", "the final record belongs to another session")
        elif not merkle_verify(record_leaf(digest), path_steps, root):
            fail("proof_invalid",
                 "the segment record is not included in the final record's Merkle root")
    plaintext = read("segment.bin") or b""
    if sha256_hex(plaintext) != record.plaintext_sha256:
        fail("plaintext_mismatch", "segment.bin differs from the sealed plaintext digest")
    else:
        report.content_checked = True
        try:
            parsed = split_segment(plaintext)
        except SegmentFormatError as error:
            fail("segment_malformed", str(error))
        else:
            if merkle_root([p.leaf() for p in parsed.packets]) != record.merkle_root:
                fail("merkle_mismatch", "the packet table does not reproduce the Merkle root")
            for problem in check_container(parsed):
                fail("container_mismatch", problem)
            clip = read("clip.webm")
            if clip is not None and clip != parsed.webm:
                fail("clip_mismatch", "clip.webm is not the WebM sealed in segment.bin")
    if stamps is not None:
        # Tokens cover the stored bodies (already authenticated above).
        def body(name: str) -> dict[str, Any] | None:
            data = read(name)
            return open_record(data, verify_key) if data is not None else None

        manifest_body, record_body = body("manifest.json"), body("record.json")
        assert manifest_body is not None and record_body is not None
        _check_clip_stamps(report, read, stamps, manifest_body, record_body,
                           body("final.json") if signed_final is not None else None, target)
    if not any(f.severity == ERROR for f in report.findings):
        report.segments_valid = 1
        report.valid_segments.append(target)
        report.last_sealed_media_time = record.media_end
    return report


def _check_clip_stamps(report: VerifyReport, read: Callable[[str], bytes | None],
                       stamps: StampOptions, manifest: dict[str, Any], record: dict[str, Any],
                       final: dict[str, Any] | None, target: int) -> None:
    records = session_records(manifest, record_digest(manifest),
                              [(target, record, record_digest(record))],
                              (final, record_digest(final)) if final is not None else None)
    files = dict(zip((layout.MANIFEST, layout.record_name(target), layout.FINAL), CLIP_TOKENS,
                     strict=True))
    by_token = {token_name(name): file for name, file in files.items()}

    def read_token(name: str) -> bytes | None:
        file = by_token.get(name)
        return read(file) if file is not None else None

    report.timestamps = check_stamps(
        records, list(by_token), read_token, stamps,
        lambda severity, code, message, segment: report.add(severity, code, message, segment),
        None, interrupted=final is None,
    )
