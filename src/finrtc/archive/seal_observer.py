"""The one point where the recorder lets something outside it see its signed records.

The recorder asks an observer for extra body fields just before it seals the manifest and the
final record, and tells it the name and digest of every record right after it is stored. The
trusted-timestamp stamper (`archive.stamper`) is the observer; the recorder knows nothing of it.
An observer must never block (it runs on the archive writer thread) and never break sealing:
its failures are logged, not raised.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class SealObserver(Protocol):
    def extra_fields(self, record_type: str) -> dict[str, Any]:
        """Fields to add to the body of a `manifest` or `final` record before it is signed."""

    def sealed(self, name: str, digest: str) -> None:
        """Record `name` (layout name) with `digest` (`records.record_digest`) is stored."""


def extra_fields(observer: SealObserver | None, record_type: str) -> dict[str, Any]:
    if observer is None:
        return {}
    try:
        return observer.extra_fields(record_type)
    except Exception:
        log.exception("seal observer failed to give %s fields", record_type)
        return {}


def sealed(observer: SealObserver | None, name: str, digest: str) -> None:
    if observer is None:
        return
    try:
        observer.sealed(name, digest)
    except Exception:
        log.exception("seal observer failed on %s", name)


class Fanout:
    """Several observers behind the recorder's one injection point, in order."""

    def __init__(self, observers: list[SealObserver]) -> None:
        self.observers = observers

    def extra_fields(self, record_type: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for observer in self.observers:
            fields.update(extra_fields(observer, record_type))
        return fields

    def sealed(self, name: str, digest: str) -> None:
        for observer in self.observers:
            sealed(observer, name, digest)
