"""Storage targets by data residency: which archive a room's sessions may be written to.

A room without a residency tag records to the default target (`archive.directory` /
`archive.storage`). A room with one records to the target of that tag — `archive.region` names the
default target's own tag, `archive.targets` the others — and a tag with no target is refused
(`ResidencyError`) rather than stored elsewhere: PIPL and GDPR transfer rules make "it went to
the default bucket" a breach, not a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finrtc.archive.settings import ArchiveConfig, StorageConfig
from finrtc.archive.storage import LocalStorage, S3Storage, Storage
from finrtc.errors import ArchiveError

DEFAULT_TARGET = "default"


class ResidencyError(ArchiveError):
    """A room's residency has no archive target."""


def _storage(storage: StorageConfig, directory: str | None, data_dir: Path, what: str) -> Storage:
    if storage.backend == "s3":
        if storage.s3 is None:
            raise ArchiveError(f"{what}.storage.backend is 's3' but {what}.storage.s3 is missing")
        return S3Storage(storage.s3)
    if not directory:
        raise ArchiveError(f"{what} is a local target without a directory")
    path = Path(directory).expanduser()
    return LocalStorage(path if path.is_absolute() else data_dir / path)


def storage_from_config(config: ArchiveConfig, data_dir: Path) -> Storage:
    """The default target's storage."""
    return _storage(config.storage, config.directory, data_dir, "archive")


@dataclass(frozen=True)
class StorageTarget:
    name: str
    storage: Storage


def target_name(config: ArchiveConfig, residency: str | None) -> str:
    """The target a room of this residency records to; ResidencyError when there is none."""
    if residency is None:
        return config.region or DEFAULT_TARGET
    if residency == config.region or residency in config.targets:
        return residency
    known = ", ".join(config.residencies()) or "none: set archive.region or archive.targets"
    raise ResidencyError(
        f"residency {residency!r} has no archive target (configured residencies: {known}); "
        "the session would be stored outside its residency, so it is refused"
    )


class StorageTargets:
    """Every configured target, opened once per server."""

    def __init__(self, config: ArchiveConfig, data_dir: Path) -> None:
        self.config = config
        default = StorageTarget(config.region or DEFAULT_TARGET, storage_from_config(config, data_dir))
        self._targets = {default.name: default}
        for tag, target in config.targets.items():
            self._targets[tag] = StorageTarget(
                tag, _storage(target.storage, target.directory, data_dir, f"archive.targets.{tag}")
            )

    def for_residency(self, residency: str | None) -> StorageTarget:
        return self._targets[target_name(self.config, residency)]

    def all(self) -> list[StorageTarget]:
        return list(self._targets.values())
