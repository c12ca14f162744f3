"""Configuration of the sealed archive (the `archive:` section of the YAML file)."""

from __future__ import annotations

import re
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from finrtc.config_base import StrictModel


class S3StorageConfig(StrictModel):
    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    prefix: str = ""
    access_key_id: str | None = None
    secret_access_key: str | None = None
    object_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] | None = "COMPLIANCE"


class StorageConfig(StrictModel):
    backend: Literal["local", "s3"] = "local"
    s3: S3StorageConfig | None = None


class ArchiveTarget(StrictModel):
    """Where the sessions of one residency are stored: a local folder or an S3 bucket."""

    # Local folder (relative paths are resolved against data_dir); ignored for s3.
    directory: str | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @model_validator(mode="after")
    def _one_place(self) -> ArchiveTarget:
        if self.storage.backend == "s3" and self.storage.s3 is None:
            raise ValueError("storage.backend is 's3' but storage.s3 is missing")
        if self.storage.backend == "local" and not self.directory:
            raise ValueError("a local target needs a directory (or storage.backend: s3)")
        return self


class RetentionClass(StrictModel):
    days: int = Field(ge=1)


_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


class TimestampingConfig(StrictModel):
    """RFC 3161 trusted timestamps over the signed records (see docs/timestamping.md)."""

    enabled: bool = False
    # The TSA's HTTP(S) endpoint (RFC 3161 over HTTP, application/timestamp-query).
    url: str | None = None
    # PEM/DER certificate of the TSA, or of the CA that issued it (relative to data_dir).
    ca_file: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # TSA policy to ask for (and require in the answer); null: the TSA's default policy.
    policy_oid: str | None = None
    # every_segment: one token per record; every_n: one per `every_n` segments (each token covers
    # the records before it through the chain). Manifest and final record are always stamped.
    mode: Literal["every_segment", "every_n"] = "every_segment"
    every_n: int = Field(default=10, ge=1, le=10_000)
    # Records waiting for a stamp (beyond: counted, alerted, never stamped).
    queue_records: int = Field(default=4096, ge=16)
    # Longest pause between two attempts while the TSA is unreachable.
    retry_max_s: float = Field(default=5.0, gt=0, le=300)
    # How long a closing session waits for its missing stamps before giving up.
    close_wait_s: float = Field(default=15.0, ge=0, le=600)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.enabled:
            return self
        if not self.url:
            raise ValueError("archive.timestamping.enabled needs url (the TSA's HTTP endpoint)")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"archive.timestamping.url must be an http(s) URL of the TSA, got {self.url!r}"
            )
        if not self.ca_file:
            raise ValueError(
                "archive.timestamping.enabled needs ca_file (the TSA certificate or its CA, "
                "to check every token the TSA returns)"
            )
        if self.policy_oid is not None and not _OID.match(self.policy_oid):
            raise ValueError(
                f"archive.timestamping.policy_oid must be a dotted OID like 1.3.6.1.4.1.4146.2.3, "
                f"got {self.policy_oid!r}"
            )
        return self


class ArchiveConfig(StrictModel):
    enabled: bool = True
    # Relative paths are resolved against data_dir.
    directory: str = "archive"
    segment_seconds: float = Field(default=2.0, gt=0.2, le=60)
    signer_key_file: str = "keys/signer.key"
    archive_public_key_files: list[str] = Field(default_factory=lambda: ["keys/archive.pub"])
    storage: StorageConfig = Field(default_factory=StorageConfig)
    retention_classes: dict[str, RetentionClass] = Field(
        default_factory=lambda: {"default": RetentionClass(days=3650)}
    )
    queue_packets: int = Field(default=2000, ge=100)
    # Residency tag of the default target (directory/storage above); null: only rooms without a
    # residency tag are stored there.
    region: str | None = Field(default=None, min_length=1, max_length=64)
    # Further targets by residency tag. A recorded room's residency must name `region` or one of
    # these: a session is never stored outside its residency.
    targets: dict[str, ArchiveTarget] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct_regions(self) -> ArchiveConfig:
        if self.region is not None and self.region in self.targets:
            raise ValueError(
                f"region {self.region!r} is both the default target's and a key of targets: "
                "name each residency once"
            )
        return self

    def residencies(self) -> list[str]:
        """The residency tags this archive can store."""
        return sorted({*self.targets, *([self.region] if self.region else [])})
    timestamping: TimestampingConfig = Field(default_factory=TimestampingConfig)
    # Publish every sealed record's digest as an `archive_chain_head` room event; webhooks deliver
    # it signed, so an endpoint filtered to that event is an outside witness of the chain
    # (`finrtc verify --witness FILE`). See docs/timestamping.md.
    witness: bool = False
