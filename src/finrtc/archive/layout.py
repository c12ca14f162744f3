"""Names of the objects of one archived session (relative to `<archive dir>/<room>/<session-id>/`).

    manifest.json              signed: session identity, retention, signer, list of sealed keys
    keys/<fingerprint>.sealed  the session data key sealed (SealedBox) to one archive public key
    segments/NNNNNN.seg        SecretBox(data key, segment plaintext)
    records/NNNNNN.json        signed segment record, chained to the previous record
    final.json                 signed final record (only after a clean end)
    legal_hold.json            present while the session is under legal hold (signed)
    destruction.json           signed destruction receipt written by `finrtc archive purge`
"""

from __future__ import annotations

import re

from finrtc.errors import ArchiveError

MANIFEST = "manifest.json"
FINAL = "final.json"
LEGAL_HOLD = "legal_hold.json"
DESTRUCTION = "destruction.json"
KEYS_DIR = "keys"
SEGMENTS_DIR = "segments"
RECORDS_DIR = "records"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ArchiveError(
            f"{what} {value!r} cannot name an archive folder: use 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


def segment_name(index: int) -> str:
    return f"{SEGMENTS_DIR}/{index:06d}.seg"


def record_name(index: int) -> str:
    return f"{RECORDS_DIR}/{index:06d}.json"


def sealed_key_name(recipient_fingerprint: str) -> str:
    return f"{KEYS_DIR}/{recipient_fingerprint}.sealed"


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name
