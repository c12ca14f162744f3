"""Configuration of the sealed archive (the `archive:` section of the YAML file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
