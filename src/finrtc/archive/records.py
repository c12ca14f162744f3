"""Signed records, canonical encoding and Merkle trees of the sealed archive.

Every signed document (manifest, segment record, final record, destruction receipt) is stored as
a JSON envelope ``{"body": {...}, "signature": base64, "signer": hex fingerprint}``. The signature
covers the canonical encoding of `body` (sorted keys, no whitespace, ASCII only), so the stored
file's formatting does not matter; its digest (`record_digest`) is the SHA-256 of those canonical
bytes and is what the next record links to.

Merkle trees follow RFC 6962 (leaf = H(0x00 || data), node = H(0x01 || left || right), an odd
node is promoted unchanged), so an inclusion proof is a list of sibling hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from finrtc.archive.keys import Signer, fingerprint

FORMAT_VERSION = 1
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


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


def merkle_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> str:
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[dict[str, str]]:
    """Sibling path of leaf `index`: [{"side": "left"|"right", "hash": hex}, ...]."""
    proof: list[dict[str, str]] = []
    level = list(leaves)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            proof.append(
                {"side": "left" if sibling < position else "right", "hash": level[sibling].hex()}
            )
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        position //= 2
    return proof


def merkle_verify(leaf: bytes, proof: Sequence[Mapping[str, str]], root_hex: str) -> bool:
    node = leaf
    try:
        for step in proof:
            sibling = bytes.fromhex(step["hash"])
            node = _node(sibling, node) if step["side"] == "left" else _node(node, sibling)
    except (KeyError, ValueError):
        return False
    return node.hex() == root_hex


def packet_leaf(
    track_id: str,
    sequence: int,
    pts: int,
    time_base: tuple[int, int],
    keyframe: bool,
    wall_clock: float,
    data_digest: str,
) -> bytes:
    """The Merkle leaf committing to one encoded packet and its metadata."""
    return merkle_leaf(
        canonical(
            [track_id, sequence, pts, time_base[0], time_base[1], keyframe, wall_clock, data_digest]
        )
    )


def record_leaf(digest_hex: str) -> bytes:
    """Leaf of the session tree over segment record digests (used by single-segment proofs)."""
    return merkle_leaf(bytes.fromhex(digest_hex))
