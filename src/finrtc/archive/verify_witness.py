"""`finrtc verify --witness FILE`: the session's records against an outside copy of its chain.

With `archive.witness` the server publishes each sealed record's digest as an
`archive_chain_head` event, which the webhooks deliver, signed, to a store the operator keeps
outside the server. FILE is what that store received: a JSON array or JSON lines of webhook
bodies (`{"type": "archive_chain_head", "room", "data": {"session", "record", "digest"}}`) or
of their `data` objects with `room`. Events of other sessions are ignored.

A witnessed digest that differs from the record's is a rewrite; a witnessed record that the
archive no longer holds is a removal (the witness sees truncation that the chain alone cannot).
A record the witness never received is a warning: webhooks can drop events under load.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from finrtc.archive.verify_stamps import SignedRecord
from finrtc.errors import ArchiveError

EVENT_TYPE = "archive_chain_head"
AddFinding = Callable[[str, str, str, int | None], None]


def load_witness(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ArchiveError(f"cannot read the witness file {path}: {error.strerror}") from None
    try:
        parsed = json.loads(text)
        items = parsed if isinstance(parsed, list) else [parsed]
    except ValueError:
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as error:
            raise ArchiveError(f"{path} is neither JSON nor JSON lines: {error}") from None
    heads = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "data" in item:
            if item.get("type") != EVENT_TYPE or not isinstance(item["data"], dict):
                continue
            heads.append({"room": item.get("room"), **item["data"]})
        elif {"session", "record", "digest"} <= item.keys():
            heads.append(item)
    return heads


def check_witness(records: Sequence[SignedRecord], heads: Sequence[dict[str, Any]], room: str,
                  session: str, add: AddFinding) -> dict[str, Any]:
    mine = [h for h in heads if h.get("session") == session and h.get("room") in (room, None)]
    witnessed: dict[str, set[str]] = {}
    for head in mine:
        witnessed.setdefault(str(head.get("record")), set()).add(str(head.get("digest")))
    held = {record.name: record for record in records}
    matched = 0
    for name, digests in sorted(witnessed.items()):
        record = held.get(name)
        if record is None:
            add("error", "witness_record_missing",
                f"{name}: the witness received its digest {sorted(digests)[0][:16]}…, but the "
                "archive no longer holds a valid record of that name (removed or truncated)", None)
        elif record.digest not in digests or len(digests) > 1:
            add("error", "witness_mismatch",
                f"{name}: the archive's record (digest {record.digest[:16]}…) is not the one the "
                f"witness received ({', '.join(d[:16] + '…' for d in sorted(digests))}): "
                "rewritten after sealing", record.index)
        else:
            matched += 1
    unwitnessed = [record.name for record in records if record.name not in witnessed]
    if unwitnessed:
        add("warning", "witness_incomplete",
            f"{len(unwitnessed)} record(s) never reached the witness (webhook drops?): "
            + ", ".join(unwitnessed[:5]) + (" …" if len(unwitnessed) > 5 else ""), None)
    return {"witnessed": len(witnessed), "matched": matched, "unwitnessed": unwitnessed}
