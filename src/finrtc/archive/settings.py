"""Configuration of the sealed archive (the `archive:` section of the YAML file)."""

from __future__ import annotations

from typing import Literal

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
