"""Access tokens: HS256 JWTs signed with the API secret.

Claims: sub (participant identity), room, role, can_publish, can_subscribe, exp, nbf, iat, and
optionally `admin` for the room API. A token is checked for signature, time window, room and
grant before anything is created.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

from finrtc.errors import AuthError, BadRequestError, ForbiddenError
from finrtc.model import Role

ALGORITHM = "HS256"
ISSUER = "finrtc"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise BadRequestError(
            f"invalid {what} {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . @ -, starting "
            "with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class Grant:
    identity: str
    room: str | None
    role: Role
    can_publish: bool
    can_subscribe: bool
    admin: bool = False
    expires_at: float = 0.0
    issued_at: float = 0.0


def mint_token(
    secret: str,
    *,
    room: str | None,
    identity: str,
    role: Role,
    ttl_s: int = 3600,
    can_publish: bool | None = None,
    can_subscribe: bool = True,
    admin: bool = False,
    not_before: float | None = None,
) -> str:
    check_name(identity, "identity")
    if room is not None:
        check_name(room, "room name")
    if ttl_s <= 0:
        raise BadRequestError("a token's time to live must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": identity,
        "role": role.value,
        "can_publish": (role is not Role.OBSERVER) if can_publish is None else can_publish,
        "can_subscribe": can_subscribe,
        "iat": now,
        "nbf": int(not_before) if not_before is not None else now,
        "exp": now + ttl_s,
    }
    if room is not None:
        claims["room"] = room
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def check_token_is_ascii(token: str) -> None:
    # A header's non-UTF-8 bytes reach us as surrogate escapes, which PyJWT cannot encode.
    if not token.isascii():
        raise AuthError("the access token is malformed: a JWT is ASCII (base64url parts joined by dots)")


def verify_token(token: str, secret: str, leeway_s: float = 5.0) -> Grant:
    check_token_is_ascii(token)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway_s,
            issuer=ISSUER,
            options={"require": ["exp", "nbf", "sub", "role", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the access token has expired; ask the backend for a new one") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("the access token is not valid yet (nbf is in the future)") from None
    except jwt.InvalidSignatureError:
        raise AuthError("the access token's signature is invalid") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthError(f"the access token lacks the {error.claim!r} claim") from None
    except jwt.InvalidTokenError as error:
        raise AuthError(f"the access token is malformed: {error}") from None
    try:
        role = Role(claims["role"])
    except ValueError:
        raise AuthError(f"the access token names an unknown role {claims['role']!r}") from None
    room = claims.get("room")
    if room is not None and not isinstance(room, str):
        raise AuthError("the access token's room claim must be a string")
    for flag in ("can_publish", "can_subscribe", "admin"):
        if flag in claims and not isinstance(claims[flag], bool):
            raise AuthError(f"the access token's {flag} claim must be true or false")
    try:
        expires_at = float(claims["exp"])
        # Backends may mint tokens without iat: nbf (required) is then the earliest issue time.
        issued_at = float(claims.get("iat", claims["nbf"]))
    except OverflowError:
        raise AuthError("the access token's exp, nbf or iat claim is out of range") from None
    return Grant(
        identity=str(claims["sub"]),
        room=room,
        role=role,
        can_publish=bool(claims.get("can_publish", False)),
        can_subscribe=bool(claims.get("can_subscribe", False)),
        admin=bool(claims.get("admin", False)),
        expires_at=expires_at,
        issued_at=issued_at,
    )


def bearer_token(header: str | None) -> str:
    if not header:
        raise AuthError("missing Authorization header; send 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    check_token_is_ascii(token)
    return token.strip()


def authorize_room(grant: Grant, room: str, *, publish: bool = False, subscribe: bool = False) -> None:
    if grant.admin and grant.room is None:
        return
    if grant.room != room:
        raise ForbiddenError(f"this token is for room {grant.room!r}, not {room!r}")
    if publish and not grant.can_publish:
        raise ForbiddenError(f"role {grant.role.value} of {grant.identity!r} may not publish")
    if subscribe and not grant.can_subscribe:
        raise ForbiddenError(f"{grant.identity!r} may not subscribe")
