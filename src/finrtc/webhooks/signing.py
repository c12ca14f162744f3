"""Webhook signatures: HMAC-SHA256 over `timestamp + "." + body`, Stripe-style header.

    Finrtc-Signature: t=1764412345,v1=5f0c...e1

The timestamp is part of the signed bytes, so a captured request cannot be replayed later than
the receiver's tolerance. Several `v1=` entries may appear (secret rotation); one match is enough.
This module uses only the standard library so a backend can copy `verify_signature` verbatim
(docs/webhooks.md has the same code; a test keeps the two in step).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from finrtc.errors import FinrtcError

SIGNATURE_HEADER = "Finrtc-Signature"
TIMESTAMP_HEADER = "Finrtc-Timestamp"
EVENT_ID_HEADER = "Finrtc-Event-Id"
EVENT_TYPE_HEADER = "Finrtc-Event-Type"
ATTEMPT_HEADER = "Finrtc-Delivery-Attempt"
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300.0


class WebhookSignatureError(FinrtcError):
    """A webhook request is not signed by the expected secret (or is too old)."""


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def compute_signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>." + body` keyed with `secret`."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, timestamp: int, body: bytes) -> str:
    return f"t={int(timestamp)},{SIGNATURE_SCHEME}={compute_signature(secret, timestamp, body)}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Plain dicts are case-sensitive; HTTP header names are not.
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def check_signature(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Raise WebhookSignatureError unless `body` is signed by `secret`; return the timestamp."""
    header = _header(headers, SIGNATURE_HEADER)
    if not header:
        raise WebhookSignatureError(f"the request has no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookSignatureError(
            f"{SIGNATURE_HEADER} must look like 't=<unix seconds>,{SIGNATURE_SCHEME}=<hex>'"
        )
    current = time.time() if now is None else now
    if tolerance_s > 0 and abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureError(
            f"the signature timestamp is {abs(current - timestamp):.0f} s away from now "
            f"(tolerance {tolerance_s:.0f} s): a replay, or a clock that needs NTP"
        )
    expected = compute_signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise WebhookSignatureError(
            "no signature matches: the body was altered or the secret differs from the sender's"
        )
    return timestamp


def verify_signature(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when `body` (the raw request bytes) carries a valid, fresh signature by `secret`."""
    try:
        check_signature(secret, headers, body, tolerance_s, now)
    except WebhookSignatureError:
        return False
    return True
