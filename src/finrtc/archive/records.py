"""The sealed archive's record format: typed records and their signed envelope.

Every signed document (manifest, segment record, final record, legal hold, destruction receipt) is
one of the record classes below, written by the recorder and the retention tools and read back by
verify and export through the same class, so the format exists in one place. Each body carries
``type`` and ``format`` (`FORMAT_VERSION`); a reader refuses a version it does not know rather
than guessing at fields.

A body is stored as a JSON envelope ``{"body": {...}, "signature": base64, "signer": hex
fingerprint}``. The signature covers the canonical encoding of `body` (sorted keys, no whitespace,
ASCII only), so the stored file's formatting does not matter; its digest (`record_digest`) is the
SHA-256 of those canonical bytes and is what the next record links to. Digests are always taken
over the stored body, never over a re-encoding of the typed record.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from finrtc.archive.keys import Signer, fingerprint

FORMAT_VERSION = 1


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_digest(body: Mapping[str, Any]) -> str:
    return sha256_hex(canonical(body))


def seal_record(body: Mapping[str, Any], signer: Signer) -> bytes:
    """The stored bytes of a signed record."""
    signature = signer.sign(canonical(body))
    envelope = {
        "body": body,
        "signature": base64.b64encode(signature).decode(),
        "signer": signer.fingerprint,
    }
    return json.dumps(envelope, sort_keys=True, indent=1, ensure_ascii=True).encode("ascii") + b"\n"


# RecordError codes of a well-signed body that is not the expected record of this format.
FORMAT_ERRORS = frozenset({"record_type", "record_format", "record_malformed"})


class RecordError(Exception):
    """A stored record is unreadable or its signature does not hold (turned into findings)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def open_record(data: bytes, verify_key: VerifyKey) -> dict[str, Any]:
    """Parse a stored envelope and check its signature; returns the body."""
    try:
        envelope = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise RecordError("record_unreadable", "not a valid JSON record") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), dict):
        raise RecordError("record_unreadable", "not a finrtc signed record (no body)")
    body: dict[str, Any] = envelope["body"]
    signature_text = envelope.get("signature")
    if not isinstance(signature_text, str):
        raise RecordError("signature_missing", "the record carries no signature")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError):
        raise RecordError("signature_invalid", "the signature is not valid base64") from None
    expected_signer = fingerprint(bytes(verify_key))
    try:
        verify_key.verify(canonical(body), signature)
    except (BadSignatureError, ValueError):
        if envelope.get("signer") != expected_signer:
            raise RecordError(
                "wrong_signer",
                f"signed by key {envelope.get('signer')!r}, not by the expected signer "
                f"{expected_signer}",
            ) from None
        raise RecordError(
            "signature_invalid", "the signature does not match the record's content"
        ) from None
    return body


# ------------------------------------------------------------------------------ typed records

# Marks a field left out of the stored body while it holds its default (keeps old bodies as they
# were written: e.g. an event's `late` flag exists only when true).
OMIT_DEFAULT: Mapping[str, bool] = types.MappingProxyType({"omit_default": True})

_T = TypeVar("_T")


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, value, where)
            except RecordError as error:
                errors.append(str(error))
        raise RecordError("record_malformed", errors[0] if errors else f"{where}: missing")
    if origin is list:
        if not isinstance(value, list):
            raise RecordError("record_malformed", f"{where}: expected a list")
        (item,) = typing.get_args(hint)
        return [_decode(item, element, f"{where}[{i}]") for i, element in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError("record_malformed", f"{where}: expected an object")
        _key, item = typing.get_args(hint)
        return {str(k): _decode(item, element, f"{where}.{k}") for k, element in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _from_json(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise RecordError("record_malformed", f"{where}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError("record_malformed", f"{where}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError("record_malformed", f"{where}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecordError("record_malformed", f"{where}: expected a string")
        return value
    raise TypeError(f"record field type {hint!r} is not supported")  # a bug in this module


def _from_json(cls: type[_T], data: Any, where: str) -> _T:
    if not isinstance(data, Mapping):
        raise RecordError("record_malformed", f"{where}: expected an object")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    known = set()
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not item.init:
            continue
        known.add(item.name)
        if item.name not in data:
            if item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING:
                continue
            raise RecordError("record_malformed", f"{where}.{item.name}: missing")
        values[item.name] = _decode(hints[item.name], data[item.name], f"{where}.{item.name}")
    unknown = sorted(set(data) - known - {"type", "format"})
    if unknown:
        # A signed field this reader does not understand could change the record's meaning.
        raise RecordError(
            "record_malformed", f"{where}: unknown field(s) {', '.join(unknown)} for this format"
        )
    return cls(**values)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        body: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            current = getattr(value, item.name)
            if item.metadata.get("omit_default") and current == item.default:
                continue
            body[item.name] = _to_json(current)
        return body
    if isinstance(value, list):
        return [_to_json(element) for element in value]
    if isinstance(value, dict):
        return {key: _to_json(element) for key, element in value.items()}
    return value


class Record:
    """A signed body of one `TYPE`; subclasses are frozen dataclasses."""

    TYPE: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = _to_json(self)
        body["type"] = self.TYPE
        body["format"] = FORMAT_VERSION
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Self:
        if body.get("type") != cls.TYPE:
            raise RecordError(
                "record_type", f"expected a {cls.TYPE} record, found {body.get('type')!r}"
            )
        if body.get("format") != FORMAT_VERSION:
            raise RecordError(
                "record_format",
                f"{cls.TYPE} record has format {body.get('format')!r}; this finrtc reads format "
                f"{FORMAT_VERSION} (use the finrtc version that wrote it)",
            )
        return _from_json(cls, body, cls.TYPE)

    def seal(self, signer: Signer) -> tuple[bytes, str]:
        """The stored bytes of the signed record and the digest the next record links to."""
        body = self.to_json()
        return seal_record(body, signer), record_digest(body)


_R = TypeVar("_R", bound=Record)


def open_typed(data: bytes, verify_key: VerifyKey, cls: type[_R]) -> tuple[_R, str]:
    """Check the envelope's signature, parse the body as `cls`; returns it and its digest."""
    body = open_record(data, verify_key)
    return cls.from_json(body), record_digest(body)


@dataclass(frozen=True)
class SealedKeyRef:
    file: str
    recipient: str


@dataclass(frozen=True)
class SignerRef:
    fingerprint: str
    public_key: str


@dataclass(frozen=True)
class StorageTargetRef:
    """The archive target the session was written to (selected by its residency)."""

    name: str
    location: str


@dataclass(frozen=True)
class Manifest(Record):
    TYPE: ClassVar[str] = "manifest"
    room: str
    session_id: str
    session_nonce: str
    created_at: str
    created_wall: float
    retention_class: str
    retention_days: int
    retain_until: str
    residency: str | None
    segment_seconds: float
    signer: SignerRef
    sealed_keys: list[SealedKeyRef]
    cipher: str
    digest: str
    container: str
    # Absent in sessions recorded before residency targets existed.
    storage_target: StorageTargetRef | None = field(default=None, metadata=OMIT_DEFAULT)
    # RFC 3161 plan: {tsa, policy_oid, mode, every_n} (docs/timestamping.md); absent: no TSA.
    timestamping: dict[str, Any] | None = field(default=None, metadata=OMIT_DEFAULT)
    # Chain heads are published for an outside witness (archive.witness).
    witness: bool = field(default=False, metadata=OMIT_DEFAULT)

    def sealed_key_for(self, recipient: str) -> SealedKeyRef | None:
        return next((item for item in self.sealed_keys if item.recipient == recipient), None)


@dataclass(frozen=True)
class SealedEvent:
    """A compliance event sealed in the segment covering its media time."""

    type: str
    media_time: float
    severity: str
    data: dict[str, Any]
    wall_clock: float
    # Sealed after its segment had closed (it belongs to an earlier media time).
    late: bool = field(default=False, metadata=OMIT_DEFAULT)

    @property
    def track_id(self) -> str | None:
        value = self.data.get("track_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class TrackSpan:
    """One track's packets inside one segment."""

    kind: str
    packets: int
    first_sequence: int
    last_sequence: int
    first_time: float
    last_time: float
    end_time: float
    starts_with_keyframe: bool


@dataclass(frozen=True)
class SegmentRecord(Record):
    TYPE: ClassVar[str] = "segment"
    room: str
    session_id: str
    index: int
    prev: str
    segment_file: str
    plaintext_sha256: str
    ciphertext_sha256: str
    ciphertext_bytes: int
    merkle_root: str
    packet_count: int
    media_start: float
    media_end: float
    wall_start: float | None
    wall_end: float | None
    sealed_at: str
    tracks: dict[str, TrackSpan]
    events: list[SealedEvent]


@dataclass(frozen=True)
class TrackTotals:
    """One track over the whole session (its container parameters and what was received)."""

    track_id: str
    kind: str
    participant: str
    role: str
    codec: str
    packets: int
    bytes: int
    first_time: float | None
    last_time: float
    # "clean", "unclean" or "session_end".
    ended: str
    width: int | None = field(default=None, metadata=OMIT_DEFAULT)
    height: int | None = field(default=None, metadata=OMIT_DEFAULT)
    sample_rate: int | None = field(default=None, metadata=OMIT_DEFAULT)
    channels: int | None = field(default=None, metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class FinalRecord(Record):
    TYPE: ClassVar[str] = "final"
    room: str
    session_id: str
    prev: str
    segments: int
    records_root: str
    media_start: float
    media_end: float
    ended_at: str
    end_reason: str
    tracks: dict[str, TrackTotals]
    # Sealed in segments (the sum over the records); received may be larger when a segment
    # could not be stored.
    packets_total: int
    packets_received: int
    bytes_total: int
    dropped_packets: int
    events_total: int
    compromised: bool
    compromise_reasons: list[str]
    # Stamping outcome: {degraded, outages, stamped_late, unstamped_at_close}; absent: no TSA.
    timestamping: dict[str, Any] | None = field(default=None, metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class DestroyedKey:
    file: str
    sealed_digest: str


@dataclass(frozen=True)
class DestructionReceipt(Record):
    TYPE: ClassVar[str] = "destruction_receipt"
    room: str
    session_id: str
    manifest_digest: str
    retention_class: str
    retain_until: str
    destroyed_at: str
    policy_time: str
    destroyed_keys: list[DestroyedKey]
    reason: str


@dataclass(frozen=True)
class LegalHold(Record):
    TYPE: ClassVar[str] = "legal_hold"
    on: bool
    room: str
    session_id: str
    reason: str
    placed_at: str | None = field(default=None, metadata=OMIT_DEFAULT)
    lifted_at: str | None = field(default=None, metadata=OMIT_DEFAULT)
