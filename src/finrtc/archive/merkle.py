"""Merkle trees of the sealed archive (RFC 6962).

Leaf = H(0x00 || data), node = H(0x01 || left || right), an odd node is promoted unchanged, so an
inclusion proof is a list of sibling hashes. A segment record commits to its packets through the
root over `packet_leaf`s; the final record commits to the segment records through the root over
`record_leaf`s (what a single-segment proof checks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from finrtc.archive.records import canonical

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


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
