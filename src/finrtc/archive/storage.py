"""Where sealed objects live: a local folder (default) or an S3-compatible bucket with Object Lock.

The interface is deliberately small: objects are written once (never overwritten), read, listed,
and, for the sealed data keys only, destroyed (crypto-shredding). Keys are relative paths with
forward slashes, e.g. ``room/session/segments/000001.seg``.

Retention: `put(..., retain_until=...)` asks the backend to keep the object immutable until then.
On S3 that is Object Lock (COMPLIANCE or GOVERNANCE mode); locally a folder cannot enforce it, so
sealed files are made read-only and the signed chain detects any change after the fact.
Sealed data keys are written WITHOUT retention, because purging must be able to destroy them;
a bucket default-retention rule would therefore defeat crypto-shredding (see docs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from finrtc.archive.settings import S3StorageConfig
from finrtc.errors import ArchiveError

TEMP_MARKER = ".tmp-"


class Storage(Protocol):
    def put(self, key: str, data: bytes, *, retain_until: dt.datetime | None = None) -> None:
        """Write a new object durably; ArchiveError if it already exists."""

    def get(self, key: str) -> bytes:
        """Read an object; FileNotFoundError if absent."""

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (recursive), sorted, including leftover temp files."""

    def destroy(self, key: str) -> None:
        """Irrecoverably remove an object (used for sealed data keys only)."""

    def set_legal_hold(self, prefix: str, on: bool) -> None:
        """Place / lift a legal hold on every object under `prefix` (where supported)."""

    def describe(self) -> str: ...


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") for part in parts) or key.startswith("/"):
        raise ArchiveError(f"invalid archive object name {key!r}")


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalStorage:
    """A folder. Writes go temp file → fsync → rename → fsync folder, so after a crash an object
    either exists whole or not at all (a leftover `*.tmp-*` file is never read as an object)."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        self.durable = durable

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o750)
            if self.durable:
                _fsync_dir(folder.parent)

    def put(self, key: str, data: bytes, *, retain_until: dt.datetime | None = None) -> None:
        path = self._path(key)
        if path.exists():
            raise ArchiveError(f"refusing to overwrite sealed archive object {path}")
        try:
            self._make_dirs(path.parent)
            temp = path.with_name(f"{path.name}{TEMP_MARKER}{secrets.token_hex(4)}")
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(descriptor, view)
                    view = view[written:]
                if self.durable:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
            if retain_until is not None:
                # A folder cannot enforce retention; read-only at least stops accidents.
                os.chmod(temp, 0o440)
            # link() fails if the name appeared meanwhile, unlike rename(): no silent overwrite.
            os.link(temp, path)
            os.unlink(temp)
            if self.durable:
                _fsync_dir(path.parent)
        except FileExistsError:
            raise ArchiveError(f"refusing to overwrite sealed archive object {path}") from None
        except OSError as error:
            raise ArchiveError(
                f"cannot write {path}: {error.strerror} (check free space and permissions)"
            ) from None

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = Path(dirpath) / name
                keys.append(full.relative_to(self.root).as_posix())
        return sorted(keys)

    def destroy(self, key: str) -> None:
        path = self._path(key)
        try:
            size = path.stat().st_size
            os.chmod(path, 0o600)
            # Overwrite before unlinking so the bytes do not linger in the file's blocks. On
            # copy-on-write file systems and SSDs this is best effort; the real guarantee is that
            # every copy (backups included) of the sealed key is destroyed by the operator.
            with open(path, "r+b") as handle:
                handle.write(secrets.token_bytes(size))
                handle.flush()
                os.fsync(handle.fileno())
            path.unlink()
            if self.durable:
                _fsync_dir(path.parent)
        except FileNotFoundError:
            return
        except OSError as error:
            raise ArchiveError(f"cannot destroy {path}: {error.strerror}") from None

    def set_legal_hold(self, prefix: str, on: bool) -> None:
        # A folder has no legal-hold primitive; the signed hold marker is the record of it.
        del prefix, on


class S3Storage:
    """An S3-compatible bucket with Object Lock enabled (AWS S3, MinIO, Ceph RGW, ...).

    Objects are written with `If-None-Match: *` so an existing name is never replaced, and with
    the Object Lock mode + retain-until date, so the stored version cannot be deleted or changed
    before that date even with the server's credentials (COMPLIANCE mode).
    """

    def __init__(self, config: S3StorageConfig, *, client: Any = None) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        if client is None:
            try:
                import boto3
            except ImportError:  # pragma: no cover - depends on the installation
                raise ArchiveError(
                    "archive.storage.backend is 's3' but boto3 is not installed; "
                    "install finrtc[s3]"
                ) from None
            kwargs: dict[str, Any] = {"region_name": config.region}
            if config.endpoint_url:
                kwargs["endpoint_url"] = config.endpoint_url
            if config.access_key_id and config.secret_access_key:
                kwargs["aws_access_key_id"] = config.access_key_id
                kwargs["aws_secret_access_key"] = config.secret_access_key
            client = boto3.client("s3", **kwargs)
        self.client = client

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _full(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    @staticmethod
    def _code(error: Exception) -> str:
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
        return ""

    def put(self, key: str, data: bytes, *, retain_until: dt.datetime | None = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full(key),
            "Body": data,
            "IfNoneMatch": "*",
            "ChecksumAlgorithm": "SHA256",
        }
        if retain_until is not None and self.config.object_lock_mode is not None:
            kwargs["ObjectLockMode"] = self.config.object_lock_mode
            kwargs["ObjectLockRetainUntilDate"] = retain_until
        try:
            self.client.put_object(**kwargs)
        except ClientError as error:
            if self._code(error) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ArchiveError(
                    f"refusing to overwrite sealed archive object {self.describe()}/{key}"
                ) from None
            raise ArchiveError(f"S3 put of {key} failed: {error}") from None
        except BotoCoreError as error:
            raise ArchiveError(f"S3 put of {key} failed: {error}") from None

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            body: bytes = response["Body"].read()
            return body
        except ClientError as error:
            if self._code(error) in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise ArchiveError(f"S3 get of {key} failed: {error}") from None
        except BotoCoreError as error:
            raise ArchiveError(f"S3 get of {key} failed: {error}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError as error:
            if self._code(error) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ArchiveError(f"S3 head of {key} failed: {error}") from None

    def list_keys(self, prefix: str) -> list[str]:
        full_prefix = self._full(prefix.rstrip("/")) + "/" if prefix else (
            f"{self.prefix}/" if self.prefix else ""
        )
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for item in page.get("Contents", []):
                keys.append(self._strip(item["Key"]))
        return sorted(keys)

    def _versions(self, full_key: str, markers: bool = True) -> list[dict[str, Any]]:
        paginator = self.client.get_paginator("list_object_versions")
        found: list[dict[str, Any]] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_key):
            items = page.get("Versions", []) + (page.get("DeleteMarkers", []) if markers else [])
            for item in items:
                if item["Key"] == full_key:
                    found.append(item)
        return found

    def destroy(self, key: str) -> None:
        from botocore.exceptions import ClientError

        full = self._full(key)
        # Deleting without a version id only adds a delete marker; destroy every version.
        for item in self._versions(full):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=item["VersionId"])
            except ClientError as error:
                raise ArchiveError(
                    f"cannot destroy {self.describe()}/{key} (version {item['VersionId']}): "
                    f"{error}; sealed keys must not be under Object Lock retention or legal hold"
                ) from None

    def set_legal_hold(self, prefix: str, on: bool) -> None:
        from botocore.exceptions import ClientError

        status = "ON" if on else "OFF"
        for key in self.list_keys(prefix):
            full = self._full(key)
            for item in self._versions(full, markers=False):
                try:
                    self.client.put_object_legal_hold(
                        Bucket=self.bucket, Key=full, VersionId=item["VersionId"],
                        LegalHold={"Status": status},
                    )
                except ClientError as error:
                    raise ArchiveError(f"cannot set legal hold on {key}: {error}") from None


def open_storage(backend: str, root: Path, s3: S3StorageConfig | None) -> Storage:
    if backend == "local":
        return LocalStorage(root)
    if s3 is None:
        raise ArchiveError("archive.storage.backend is 's3' but archive.storage.s3 is not set")
    return S3Storage(s3)
