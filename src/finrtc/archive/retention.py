"""Retention: crypto-shredding of sessions past their retain-until date, and legal holds.

Purging destroys every sealed copy of a session's data key (the media stays in place, under its
storage lock, but can never be decrypted again) and leaves a signed destruction receipt. A
session under legal hold is never purged. The receipt is written before the keys are destroyed,
so a purge interrupted half-way is completed by the next run, and a key can never disappear
without a receipt saying why.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import VerifyKey

from finrtc.archive import layout
from finrtc.archive.keys import Signer
from finrtc.archive.records import (
    DestroyedKey,
    DestructionReceipt,
    LegalHold,
    Manifest,
    RecordError,
    open_typed,
    record_digest,
)
from finrtc.archive.storage import Storage
from finrtc.errors import ArchiveError


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def parse_time(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def find_sessions(storage: Storage) -> list[str]:
    """Prefixes `<room>/<session-id>` of every session in the archive."""
    prefixes = set()
    for key in storage.list_keys(""):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == layout.MANIFEST:
            prefixes.add(f"{parts[0]}/{parts[1]}")
    return sorted(prefixes)


@dataclass
class PurgeOutcome:
    session: str
    action: str  # purged | retained | legal_hold | already_purged | skipped_invalid | would_purge
    detail: str = ""
    retain_until: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session, "action": self.action, "detail": self.detail,
                "retain_until": self.retain_until}


@dataclass
class PurgeResult:
    outcomes: list[PurgeOutcome] = field(default_factory=list)

    @property
    def purged(self) -> list[str]:
        return [o.session for o in self.outcomes if o.action == "purged"]


def _remaining_keys(storage: Storage, prefix: str) -> list[str]:
    return [key for key in storage.list_keys(layout.join(prefix, layout.KEYS_DIR))]


def purge(
    storage: Storage,
    signer: Signer,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    only: list[str] | None = None,
) -> PurgeResult:
    """Crypto-shred every session whose retain-until date has passed and that has no legal hold."""
    moment = now or dt.datetime.now(dt.UTC)
    verify_key = VerifyKey(signer.public_key)
    result = PurgeResult()
    for prefix in find_sessions(storage):
        if only is not None and prefix not in only:
            continue
        try:
            manifest, manifest_digest = open_typed(
                storage.get(layout.join(prefix, layout.MANIFEST)), verify_key, Manifest
            )
        except (RecordError, FileNotFoundError) as error:
            # Never destroy keys on the word of a manifest we cannot authenticate.
            result.outcomes.append(PurgeOutcome(prefix, "skipped_invalid", f"manifest: {error}"))
            continue
        retain_until = parse_time(manifest.retain_until)
        until_text = _iso(retain_until)
        if storage.exists(layout.join(prefix, layout.LEGAL_HOLD)):
            result.outcomes.append(
                PurgeOutcome(prefix, "legal_hold", "under legal hold", until_text)
            )
            continue
        receipt_key = layout.join(prefix, layout.DESTRUCTION)
        remaining = _remaining_keys(storage, prefix)
        if storage.exists(receipt_key):
            if remaining and not dry_run:
                # A previous purge wrote its receipt but was interrupted: finish the job.
                for key in remaining:
                    storage.destroy(key)
                result.outcomes.append(
                    PurgeOutcome(prefix, "purged", "completed an interrupted purge", until_text)
                )
            else:
                result.outcomes.append(PurgeOutcome(prefix, "already_purged", "", until_text))
            continue
        if moment < retain_until:
            result.outcomes.append(PurgeOutcome(prefix, "retained", "", until_text))
            continue
        if dry_run:
            result.outcomes.append(PurgeOutcome(prefix, "would_purge", "", until_text))
            continue
        destroyed = []
        for key in remaining:
            try:
                digest = record_digest({"sealed": storage.get(key).hex()})
            except FileNotFoundError:
                continue
            destroyed.append(DestroyedKey(file=key[len(prefix) + 1 :], sealed_digest=digest))
        receipt = DestructionReceipt(
            room=manifest.room,
            session_id=manifest.session_id,
            manifest_digest=manifest_digest,
            retention_class=manifest.retention_class,
            retain_until=until_text,
            destroyed_at=_iso(dt.datetime.fromtimestamp(time.time(), dt.UTC)),
            policy_time=_iso(moment),
            destroyed_keys=destroyed,
            reason="retention period ended; session data key crypto-shredded",
        )
        storage.put(receipt_key, receipt.seal(signer)[0], retain_until=None)
        for key in remaining:
            storage.destroy(key)
        result.outcomes.append(
            PurgeOutcome(prefix, "purged", f"{len(destroyed)} sealed key(s) destroyed", until_text)
        )
    return result


def place_legal_hold(storage: Storage, prefix: str, signer: Signer, reason: str) -> None:
    if not storage.exists(layout.join(prefix, layout.MANIFEST)):
        raise ArchiveError(f"{storage.describe()}/{prefix} is not an archived session")
    marker = layout.join(prefix, layout.LEGAL_HOLD)
    if storage.exists(marker):
        raise ArchiveError(f"{prefix} is already under legal hold")
    stamp = time.time()
    hold = LegalHold(
        on=True, room=prefix.split("/")[0], session_id=prefix.split("/")[-1], reason=reason,
        placed_at=_iso(dt.datetime.fromtimestamp(stamp, dt.UTC)),
    )
    signed, _digest = hold.seal(signer)
    storage.put(layout.join(prefix, f"legal_hold_log/{int(stamp * 1000)}-on.json"), signed)
    # The marker itself is not retention-locked so that the hold can be lifted later.
    storage.put(marker, signed, retain_until=None)
    storage.set_legal_hold(prefix, True)


def lift_legal_hold(storage: Storage, prefix: str, signer: Signer, reason: str) -> None:
    marker = layout.join(prefix, layout.LEGAL_HOLD)
    if not storage.exists(marker):
        raise ArchiveError(f"{prefix} is not under legal hold")
    stamp = time.time()
    lift = LegalHold(
        on=False, room=prefix.split("/")[0], session_id=prefix.split("/")[-1], reason=reason,
        lifted_at=_iso(dt.datetime.fromtimestamp(stamp, dt.UTC)),
    )
    storage.put(layout.join(prefix, f"legal_hold_log/{int(stamp * 1000)}-off.json"),
                lift.seal(signer)[0])
    storage.set_legal_hold(prefix, False)
    storage.destroy(marker)
