"""What a node publishes about itself in the room directory, and how it names itself.

Kept apart from the directory client so that a node without Redis (one node, several workers)
never imports the `redis` package (an optional extra)."""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import asdict, dataclass
from typing import Any


def generated_node_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:40]
    return f"{host or 'node'}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    # What clients use (shown to operators); other nodes proxy to internal_url.
    public_url: str
    internal_url: str
    rooms: int
    participants: int
    workers: int
    started_at: float
    heartbeat_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> NodeRecord | None:
        try:
            data: Any = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError):
            return None
