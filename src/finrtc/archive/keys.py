"""Key files of the sealed archive: the server's Ed25519 signer and the operator's archive keys.

File format (text, one key per file)::

    finrtc <kind> v1
    <base64 of the 32 raw key bytes>

where <kind> is one of `ed25519-signing-key`, `ed25519-verify-key`, `x25519-private-key`,
`x25519-public-key`. The header names the key's purpose so that a public key is never loaded
where a private one is expected (and vice versa). Private files are created with mode 0600 and
refused when group or others may read them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from finrtc.errors import KeyFileError

log = logging.getLogger(__name__)

SIGNING_KIND = "ed25519-signing-key"
VERIFY_KIND = "ed25519-verify-key"
ARCHIVE_PRIVATE_KIND = "x25519-private-key"
ARCHIVE_PUBLIC_KIND = "x25519-public-key"
_PRIVATE_KINDS = frozenset({SIGNING_KIND, ARCHIVE_PRIVATE_KIND})

SIGNER_KEY_FILE = "signer.key"
SIGNER_PUB_FILE = "signer.pub"
ARCHIVE_KEY_FILE = "archive.key"
ARCHIVE_PUB_FILE = "archive.pub"


def fingerprint(raw_public_key: bytes) -> str:
    """Short, stable name of a public key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def encode_key(kind: str, raw: bytes) -> str:
    return f"finrtc {kind} v1\n{base64.b64encode(raw).decode()}\n"


def decode_key(text: str, kind: str, source: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 2 or not lines[0].startswith("finrtc "):
        raise KeyFileError(
            f"{source} is not a finrtc key file (expected a 'finrtc {kind} v1' header line and one "
            "base64 line; create keys with `finrtc keys generate --out DIR`)"
        )
    header = lines[0].split()
    if len(header) != 3 or header[2] != "v1":
        raise KeyFileError(f"{source}: unsupported key file header {lines[0]!r}")
    if header[1] != kind:
        raise KeyFileError(
            f"{source} holds a {header[1]}, but a {kind} is needed here "
            "(check that you did not swap a .pub and a .key file)"
        )
    try:
        raw = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{source}: the key line is not valid base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"{source}: a {kind} is 32 bytes, this one is {len(raw)}")
    return raw


def check_private_permissions(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"private key file {path} has unsafe permissions {stat.S_IMODE(mode):04o}; "
            f"group and others must have no access (run: chmod 600 {path})"
        )


def read_key_file(path: Path, kind: str) -> bytes:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError(f"cannot read key file {path}: {error}") from None
    if kind in _PRIVATE_KINDS:
        check_private_permissions(path)
    return decode_key(text, kind, str(path))


def write_key_file(path: Path, kind: str, raw: bytes) -> None:
    """Create `path` exclusively (never overwrite a key) and durably."""
    mode = 0o600 if kind in _PRIVATE_KINDS else 0o644
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite a key (move it away first if you "
            "really mean to replace it: archives sealed to the old key need the old key)"
        ) from None
    except OSError as error:
        raise KeyFileError(f"cannot create key file {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(encode_key(kind, raw))
        handle.flush()
        os.fsync(handle.fileno())
    # The umask may have narrowed the mode; make it exact.
    os.chmod(path, mode)


@dataclass(frozen=True)
class KeyPaths:
    signer_key: Path
    signer_pub: Path
    archive_key: Path
    archive_pub: Path

    @classmethod
    def in_dir(cls, directory: Path) -> KeyPaths:
        return cls(
            directory / SIGNER_KEY_FILE,
            directory / SIGNER_PUB_FILE,
            directory / ARCHIVE_KEY_FILE,
            directory / ARCHIVE_PUB_FILE,
        )

    def all(self) -> tuple[Path, Path, Path, Path]:
        return (self.signer_key, self.signer_pub, self.archive_key, self.archive_pub)


def _prepare_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)


def generate_keys(directory: Path) -> KeyPaths:
    """Create signer and archive key pairs in `directory`; refuses if any file already exists."""
    paths = KeyPaths.in_dir(directory)
    existing = [str(path) for path in paths.all() if path.exists()]
    if existing:
        raise KeyFileError(
            f"refusing to overwrite existing key file(s): {', '.join(existing)}; "
            "choose another --out folder"
        )
    _prepare_dir(directory)
    signing = SigningKey.generate()
    archive = PrivateKey.generate()
    write_key_file(paths.signer_key, SIGNING_KIND, bytes(signing))
    write_key_file(paths.signer_pub, VERIFY_KIND, bytes(signing.verify_key))
    write_key_file(paths.archive_key, ARCHIVE_PRIVATE_KIND, bytes(archive))
    write_key_file(paths.archive_pub, ARCHIVE_PUBLIC_KIND, bytes(archive.public_key))
    return paths


def ensure_dev_keys(keys_dir: Path) -> KeyPaths:
    """Dev mode: create the four key files on first start, reuse them afterwards.

    A half-present set (some files missing) is an error rather than silently regenerated:
    archives already sealed to the old keys would become unreadable.
    """
    paths = KeyPaths.in_dir(keys_dir)
    present = [path.exists() for path in paths.all()]
    if not any(present):
        log.warning("creating new archive keys in %s (dev mode)", keys_dir)
        return generate_keys(keys_dir)
    if not all(present):
        missing = [str(path) for path, ok in zip(paths.all(), present, strict=True) if not ok]
        raise KeyFileError(
            f"incomplete key set in {keys_dir}: missing {', '.join(missing)}; restore them from "
            "backup, or move the folder away to create a fresh set"
        )
    # Loading checks formats and private-file permissions.
    load_signing_key(paths.signer_key)
    load_archive_private_key(paths.archive_key)
    load_verify_key(paths.signer_pub)
    load_archive_public_key(paths.archive_pub)
    return paths


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey(read_key_file(path, SIGNING_KIND))


def load_verify_key(path: Path) -> VerifyKey:
    return VerifyKey(read_key_file(path, VERIFY_KIND))


def load_archive_private_key(path: Path) -> PrivateKey:
    return PrivateKey(read_key_file(path, ARCHIVE_PRIVATE_KIND))


def load_archive_public_key(path: Path) -> PublicKey:
    return PublicKey(read_key_file(path, ARCHIVE_PUBLIC_KIND))


class Signer:
    """The server's signing key, with its public half and fingerprint at hand."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.public_key: bytes = bytes(key.verify_key)
        self.fingerprint = fingerprint(self.public_key)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        return cls(load_signing_key(path))

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message).signature)
