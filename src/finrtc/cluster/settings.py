"""The `cluster:` section of the YAML file."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from finrtc.config_base import StrictModel

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ClusterConfig(StrictModel):
    # redis:// or rediss:// URL of the room directory shared by every node; None = one node.
    redis_url: str | None = None
    # This node's name in the directory; empty = generated at start (a restarted node is a new
    # node: its rooms died with it).
    node_id: str | None = None
    # Where other nodes reach this node's HTTP listener when they proxy a request for one of its
    # rooms; empty = server.public_url (or host:port).
    internal_url: str | None = None
    key_prefix: str = Field(default="finrtc:", min_length=1, max_length=64)
    heartbeat_interval_s: float = Field(default=2.0, gt=0, le=60)
    # A node (and each room it owns) that has not refreshed its entry this long is gone.
    node_expiry_s: float = Field(default=10.0, gt=0, le=600)
    # How long a node waits for another node's answer when proxying or listing rooms.
    peer_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url {url!r} must start with redis://, rediss:// or unix://")
        return url

    @field_validator("node_id")
    @classmethod
    def _node_id_shape(cls, node_id: str | None) -> str | None:
        if node_id is not None and not _NODE_ID.match(node_id):
            raise ValueError(
                f"node_id {node_id!r}: use 1-63 letters, digits, '.', '_' or '-' (it is a Redis key part)"
            )
        return node_id

    @field_validator("internal_url")
    @classmethod
    def _internal_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"internal_url {url!r} must start with http:// or https://")
        return url.rstrip("/") if url is not None else None

    @model_validator(mode="after")
    def _expiry_outlives_heartbeats(self) -> ClusterConfig:
        # One lost heartbeat must not make a live node look dead.
        if self.node_expiry_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"node_expiry_s ({self.node_expiry_s}) must be at least twice heartbeat_interval_s "
                f"({self.heartbeat_interval_s})"
            )
        return self
