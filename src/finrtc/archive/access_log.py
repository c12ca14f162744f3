"""Who looked at a recording: a signed, hash-chained access log per archived session.

Every `verify`, `export` (with its required reason), single-segment proof, legal hold and purge
appends one entry under `access/NNNNNN.json`, beside the records, through the archive storage:

    {"type": "access", "room", "session_id", "seq", "prev", "at", "action", "reason", "detail",
     "actor": {"name", "key", "public_key"}}

signed (the usual envelope, `records.seal_record`) by the actor's own Ed25519 key: an auditor's
key (`--actor-key`, any key made by `finrtc keys generate`), the server's signer for the server's
own actions, or, when the actor has no key, a one-time key (the entry then names the OS user and
host but proves no identity: shown as unattributed). `prev` is the digest of the previous entry;
entry 0 links to the manifest, binding the log to its session. Entries are write-once, so two
writers racing for one number cannot overwrite each other: the loser takes the next number.

What the chain proves: an entry cannot be altered, reordered or removed from the middle without
breaking the links, and an entry signed by an auditor's key cannot be forged by the server.
Dropping entries from the end is visible only against an outside copy (e.g. trusted timestamps).
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey, VerifyKey

from finrtc.archive import layout
from finrtc.archive.keys import Signer, fingerprint
from finrtc.archive.records import FORMAT_VERSION, RecordError, open_record, record_digest, seal_record
from finrtc.archive.storage import TEMP_MARKER, Storage
from finrtc.errors import ArchiveError

ACCESS_DIR = "access"
ACTIONS = frozenset({
    "verify", "verify_segment", "export", "export_segment", "legal_hold_on", "legal_hold_off",
    "purge", "report_read",
})
APPEND_ATTEMPTS = 20


def entry_name(seq: int) -> str:
    return f"{ACCESS_DIR}/{seq:06d}.json"


@dataclass(frozen=True)
class Actor:
    """Who acts: a name and the key that signs their entries (`attributed` if it is theirs)."""

    name: str
    signer: Signer
    attributed: bool

    @classmethod
    def with_key(cls, signer: Signer, name: str | None = None) -> Actor:
        return cls(name or f"key {signer.fingerprint}", signer, True)

    @classmethod
    def unattributed(cls, name: str | None = None) -> Actor:
        return cls(name or local_identity(), Signer(SigningKey.generate()), False)


def local_identity() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _indexed(storage: Storage, prefix: str) -> dict[int, str]:
    found: dict[int, str] = {}
    base = layout.join(prefix, ACCESS_DIR) + "/"
    for key in storage.list_keys(layout.join(prefix, ACCESS_DIR)):
        if not key.startswith(base) or TEMP_MARKER in key:
            continue
        stem = key[len(base):]
        if stem.endswith(".json") and stem[:-5].isdigit():
            found[int(stem[:-5])] = key
    return found


def _envelope_body(data: bytes) -> dict[str, Any]:
    envelope = json.loads(data.decode("ascii"))
    body = envelope.get("body") if isinstance(envelope, dict) else None
    if not isinstance(body, dict):
        raise ValueError("no body")
    return body


def _retain_until(manifest: dict[str, Any]) -> dt.datetime | None:
    try:
        until = dt.datetime.fromisoformat(str(manifest.get("retain_until")))
    except ValueError:
        return None
    until = until if until.tzinfo is not None else until.replace(tzinfo=dt.UTC)
    # Past retention (a purge's own entry) there is nothing left to lock it to.
    return until if until > dt.datetime.now(dt.UTC) else None


def append(storage: Storage, prefix: str, actor: Actor, action: str, *, reason: str | None = None,
           detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one signed entry; returns its body. ArchiveError if the session or storage fails."""
    if action not in ACTIONS:
        raise ArchiveError(f"unknown access action {action!r}")
    try:
        manifest = _envelope_body(storage.get(layout.join(prefix, layout.MANIFEST)))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        raise ArchiveError(f"{prefix or 'the folder'} is not an archived session (no manifest)"
                           ) from None
    for _attempt in range(APPEND_ATTEMPTS):
        entries = _indexed(storage, prefix)
        seq = max(entries) + 1 if entries else 0
        if seq == 0:
            prev = record_digest(manifest)
        else:
            try:
                prev = record_digest(_envelope_body(storage.get(entries[seq - 1])))
            except (ValueError, UnicodeDecodeError):
                # A damaged last entry stays damaged (verify reports it); link to its bytes.
                prev = record_digest({"unreadable": storage.get(entries[seq - 1]).hex()})
        body = {
            "type": "access",
            "format": FORMAT_VERSION,
            "room": manifest.get("room"),
            "session_id": manifest.get("session_id"),
            "seq": seq,
            "prev": prev,
            "at": _iso_now(),
            "action": action,
            "reason": reason,
            "detail": detail or {},
            "actor": {
                "name": actor.name,
                "key": actor.signer.fingerprint if actor.attributed else None,
                "public_key": base64.b64encode(actor.signer.public_key).decode(),
            },
        }
        try:
            # Locked like the records it is about (S3 Object Lock; read-only files locally).
            storage.put(layout.join(prefix, entry_name(seq)), seal_record(body, actor.signer),
                        retain_until=_retain_until(manifest))
        except ArchiveError as error:
            if "refusing to overwrite" in str(error):
                continue  # another writer took this number: take the next
            raise
        return body
    raise ArchiveError(f"could not append to the access log of {prefix}: too many concurrent "
                       "writers")


@dataclass
class AccessLogReport:
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[int | None, str, str]] = field(default_factory=list)  # (seq, code, text)

    @property
    def holds(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "holds": self.holds,
            "entries": [
                {key: entry.get(key) for key in
                 ("seq", "at", "action", "reason", "actor", "detail")}
                for entry in self.entries
            ],
            "problems": [{"seq": seq, "code": code, "message": message}
                         for seq, code, message in self.problems],
        }

    def lines(self) -> list[str]:
        out = []
        for entry in self.entries:
            actor = entry.get("actor") or {}
            key = actor.get("key")
            who = f"{actor.get('name')} ({f'key {key}' if key else 'unattributed'})"
            reason = f" — reason: {entry.get('reason')}" if entry.get("reason") else ""
            out.append(f"  #{entry.get('seq')} {entry.get('at')} {entry.get('action'):14} "
                       f"{who}{reason}")
        for seq, code, message in self.problems:
            where = f"#{seq} " if seq is not None else ""
            out.append(f"  ERROR {code}: {where}{message}")
        return out


def check(storage: Storage, prefix: str, manifest: dict[str, Any]) -> AccessLogReport:
    """Check the chain of the access log of a session whose manifest is already authenticated.

    Any Ed25519 key may sign an entry (the entry names it); its signature and link must hold.
    """
    report = AccessLogReport()
    entries = _indexed(storage, prefix)
    if not entries:
        return report
    prev: str | None = record_digest(manifest)
    for seq in range(max(entries) + 1):
        key = entries.get(seq)
        if key is None:
            report.problems.append((seq, "access_entry_missing",
                                    f"access entry {seq} is missing: the log was cut"))
            prev = None
            continue
        data = storage.get(key)
        try:
            body = _envelope_body(data)
        except (ValueError, UnicodeDecodeError) as error:
            report.problems.append((seq, "access_entry_invalid",
                                    f"{entry_name(seq)} is unreadable: {error}"))
            prev = None
            continue
        named = body.get("actor")
        actor: dict[str, Any] = named if isinstance(named, dict) else {}
        public_key: VerifyKey | None
        try:
            public_key = VerifyKey(base64.b64decode(str(actor.get("public_key")), validate=True))
            open_record(data, public_key)
        except (RecordError, ValueError, TypeError) as error:
            # The links are still followed: a later entry shows whether this one was changed.
            report.problems.append((seq, "access_entry_invalid",
                                    f"{entry_name(seq)}: its signature does not hold ({error})"))
            public_key = None
        if public_key is not None and actor.get("key") not in (
            None, fingerprint(bytes(public_key))
        ):
            report.problems.append((seq, "access_entry_invalid",
                                    f"{entry_name(seq)} names key {actor.get('key')} but is "
                                    "signed by another"))
        if body.get("seq") != seq or (body.get("room"), body.get("session_id")) != (
            manifest.get("room"), manifest.get("session_id")
        ):
            report.problems.append((seq, "access_entry_out_of_place",
                                    f"{entry_name(seq)} belongs elsewhere (seq "
                                    f"{body.get('seq')}, session {body.get('session_id')})"))
        if prev is not None and body.get("prev") != prev:
            report.problems.append((seq, "access_chain_broken",
                                    f"{entry_name(seq)} does not link to the entry before it: "
                                    "an entry was altered, removed or reordered"))
        prev = record_digest(body)
        report.entries.append(body)
    return report
