"""`finrtc verify --tsa-cert`: the trusted timestamps of a session, record by record.

Every signed record (manifest, segment records, final record) is looked up in `timestamps/`.
A token must check against the given TSA certificate (signature chain, timeStamping purpose),
stamp exactly the record's digest, and carry a time within `--max-stamp-delay` of the record's
own sealing time (`created_at`, `sealed_at`, `ended_at`). A record rewritten later, even with the
server's key, fails: its new digest matches no old token, and a new token carries the time of
the rewrite.

A record whose own token is missing or late is still anchored when a later record's token is
within the tolerance of its sealing time, because each record commits to the one before it
(`prev`). That is how `mode: every_n` works by design, and how the records sealed during a TSA
outage are judged: they are reported as stamped late (by how much), not as tampered.

Per record: `stamped`, `stamped_late` (over `late_after_s`, within the tolerance), `covered`
(no own token, anchored by a later one), `missing` or `too_late` (not anchored within the
tolerance: an error), `invalid` (the token does not hold: an error).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from finrtc.archive import layout
from finrtc.archive.timestamping import (
    TIMESTAMPS_DIR,
    TOKEN_SUFFIX,
    TimestampError,
    TokenInfo,
    check_token,
    token_name,
)

# (severity, code, message, segment index or None)
AddFinding = Callable[[str, str, str, int | None], None]
Reader = Callable[[str], bytes | None]

ERROR = "error"
INTERRUPTION = "interruption"
WARNING = "warning"
INFO = "info"


@dataclass(frozen=True)
class StampOptions:
    trusted: Sequence[x509.Certificate]
    max_delay_s: float = 60.0
    late_after_s: float = 5.0
    policy_oid: str | None = None


@dataclass(frozen=True)
class SignedRecord:
    name: str
    digest: str
    sealed_at: dt.datetime | None
    index: int | None = None


@dataclass
class _Outcome:
    record: SignedRecord
    status: str = "missing"
    info: TokenInfo | None = None
    delay_s: float | None = None
    problem: str | None = None
    covered_by: str | None = None
    cover_delay_s: float | None = None
    info_text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "record": self.record.name,
            "status": self.status,
            "gen_time": self.info.gen_time.isoformat(timespec="milliseconds")
            if self.info else None,
            "delay_s": _round(self.delay_s),
            "covered_by": self.covered_by,
            "cover_delay_s": _round(self.cover_delay_s),
            "problem": self.problem,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def check_stamps(records: Sequence[SignedRecord], present_keys: Sequence[str], read: Reader,
                 options: StampOptions, add: AddFinding,
                 manifest_plan: dict[str, Any] | None, *, interrupted: bool = False
                 ) -> dict[str, Any]:
    """Check the tokens of `records` (in chain order); findings go to `add`; returns a summary.

    `interrupted` (no final record): records after the last token, sealed within the tolerance
    of it, were sealed just before the crash and their tokens never came; they are reported
    unanchored at interruption level (exit 2), not as tampering, since nothing contradicts them
    (nor proves them). Beyond the tolerance a missing token is an error even then: otherwise an
    insider could rewrite a long tail, drop its tokens and the final record, and call it a crash.
    """
    outcomes = [_check_one(record, read, options) for record in records]
    # Walk backwards: the earliest valid token time at or after each record anchors it.
    best: tuple[dt.datetime, str] | None = None
    anchors: list[tuple[dt.datetime, str] | None] = [None] * len(outcomes)
    for position in range(len(outcomes) - 1, -1, -1):
        outcome = outcomes[position]
        if outcome.info is not None and outcome.status != "invalid" and (
            best is None or outcome.info.gen_time <= best[0]
        ):
            best = (outcome.info.gen_time, outcome.record.name)
        anchors[position] = best
    valid_times = [o.info.gen_time for o in outcomes
                   if o.info is not None and o.status != "invalid"]
    latest = max(valid_times) if valid_times else None
    every_n = manifest_plan is not None and manifest_plan.get("mode") == "every_n"
    covered_by_design = 0
    for outcome, anchor in zip(outcomes, anchors, strict=True):
        record = outcome.record
        where = record.index
        if outcome.status == "invalid":
            add(ERROR, f"timestamp_{outcome.problem or 'invalid'}",
                f"{record.name}: the time-stamp token does not hold: {outcome.info_text}", where)
            continue
        if outcome.status in ("stamped", "stamped_late"):
            if outcome.status == "stamped_late":
                add(WARNING, "stamped_late",
                    f"{record.name}: stamped late by {outcome.delay_s:.1f}s (TSA time "
                    f"{_when(outcome.info)}; within the {options.max_delay_s:g}s tolerance)",
                    where)
            continue
        # Missing, or its own token is too late: is it anchored by a later token in time?
        if anchor is not None and record.sealed_at is not None:
            delay = (anchor[0] - record.sealed_at).total_seconds()
            if anchor[1] != record.name and delay <= options.max_delay_s:
                outcome.covered_by, outcome.cover_delay_s = anchor[1], delay
                own = outcome.status
                outcome.status = "covered"
                if own == "missing" and every_n:
                    covered_by_design += 1
                elif own == "missing":
                    add(WARNING, "timestamp_missing_covered",
                        f"{record.name}: no time-stamp token of its own; anchored by the token "
                        f"of {anchor[1]} {delay:.1f}s after sealing (the chain links them)",
                        where)
                else:
                    add(WARNING, "stamped_late",
                        f"{record.name}: stamped late by {outcome.delay_s:.1f}s; anchored by "
                        f"the token of {anchor[1]} {delay:.1f}s after sealing", where)
                continue
        if outcome.status == "missing" and anchor is None and interrupted and (
            latest is not None and record.sealed_at is not None
            and (record.sealed_at - latest).total_seconds() <= options.max_delay_s
        ):
            outcome.status = "unanchored_tail"
            add(INTERRUPTION, "timestamp_missing_after_interruption",
                f"{record.name}: no time-stamp token (sealed {_iso(record.sealed_at)}, after the "
                "last token of this interrupted session): nothing outside the server anchors it, "
                "so it may have been altered after the interruption", where)
        elif outcome.status == "missing":
            add(ERROR, "timestamp_missing",
                f"{record.name}: no time-stamp token anchors it within "
                f"{options.max_delay_s:g}s of its sealing time {_iso(record.sealed_at)}"
                + (f" (the nearest later token, of {anchor[1]}, is "
                   f"{(anchor[0] - record.sealed_at).total_seconds():.1f}s after it)"
                   if anchor is not None and record.sealed_at is not None else ""),
                where)
        else:
            add(ERROR, "timestamp_too_late",
                f"{record.name}: {outcome.problem}", where)
    known = {token_name(record.name) for record in records}
    for key in present_keys:
        if key.startswith(TIMESTAMPS_DIR + "/") and key.endswith(TOKEN_SUFFIX) and (
            key not in known
        ):
            add(WARNING, "timestamp_orphan",
                f"{key} stamps no record of this session (a removed record?)", None)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    times = [o.info.gen_time for o in outcomes if o.info is not None and o.status != "invalid"]
    late = [o for o in outcomes if o.status == "stamped_late" or (
        o.status == "covered" and o.delay_s is not None)]
    summary = {
        "checked": len(outcomes),
        "counts": counts,
        "covered_by_design": covered_by_design,
        "max_delay_s": options.max_delay_s,
        "late_after_s": options.late_after_s,
        "first_token": _iso(min(times)) if times else None,
        "last_token": _iso(max(times)) if times else None,
        "tsa": sorted({o.info.tsa for o in outcomes if o.info is not None}),
        "stamped_late": [
            {"record": o.record.name, "late_by_s": _round(o.delay_s)} for o in late
        ],
        "records": [outcome.to_json() for outcome in outcomes],
    }
    add(INFO, "timestamps",
        f"{counts.get('stamped', 0)} stamped, {counts.get('stamped_late', 0)} stamped late, "
        f"{counts.get('covered', 0)} anchored by a later token, "
        f"{counts.get('missing', 0) + counts.get('too_late', 0)} not anchored, "
        + (f"{counts['unanchored_tail']} unanchored after the interruption, "
           if counts.get("unanchored_tail") else "") +
        f"{counts.get('invalid', 0)} invalid, of {len(outcomes)} records"
        + (f"; TSA times {summary['first_token']} .. {summary['last_token']}" if times else ""),
        None)
    return summary


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value is not None else "unknown"


def _when(info: TokenInfo | None) -> str:
    return _iso(info.gen_time) if info is not None else "unknown"


def _check_one(record: SignedRecord, read: Reader, options: StampOptions) -> _Outcome:
    outcome = _Outcome(record)
    token = read(token_name(record.name))
    if token is None:
        return outcome
    try:
        info = check_token(token, bytes.fromhex(record.digest), options.trusted,
                           options.policy_oid)
    except TimestampError as error:
        outcome.status, outcome.problem = "invalid", error.code
        outcome.info_text = str(error)
        return outcome
    outcome.info = info
    if record.sealed_at is None:
        outcome.status, outcome.problem = "too_late", "the record has no sealing time to compare"
        return outcome
    delay = (info.gen_time - record.sealed_at).total_seconds()
    outcome.delay_s = delay
    if delay < -options.max_delay_s:
        outcome.status = "too_late"
        outcome.problem = (f"the token's time {_iso(info.gen_time)} is {-delay:.1f}s BEFORE the "
                           f"record says it was sealed ({_iso(record.sealed_at)}): the record's "
                           "time was forged, or the server clock is wrong")
    elif delay > options.max_delay_s:
        outcome.status = "too_late"
        outcome.problem = (f"stamped {delay:.1f}s after sealing ({_iso(record.sealed_at)} -> TSA "
                           f"{_iso(info.gen_time)}), beyond the {options.max_delay_s:g}s "
                           "tolerance: the record may have been rewritten after the fact")
    elif delay > options.late_after_s:
        outcome.status = "stamped_late"
    else:
        outcome.status = "stamped"
    return outcome


def session_records(manifest: dict[str, Any], manifest_digest: str,
                    segments: Sequence[tuple[int, dict[str, Any], str]],
                    final: tuple[dict[str, Any], str] | None) -> list[SignedRecord]:
    """The signed records of a session in chain order, with their sealing times."""
    records = [SignedRecord(layout.MANIFEST, manifest_digest, parse_time(manifest.get("created_at")))]
    for index, body, digest in segments:
        records.append(SignedRecord(layout.record_name(index), digest,
                                    parse_time(body.get("sealed_at")), index))
    if final is not None:
        records.append(SignedRecord(layout.FINAL, final[1], parse_time(final[0].get("ended_at"))))
    return records
