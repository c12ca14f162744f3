"""The room API under /v1/: what a bank's backend uses to run calls.

Callers authenticate with an API key (HTTP Basic `key:secret`, checked against
`auth.api_keys`) or an admin JWT (`admin: true`; without a room claim it covers every room, with
one only that room). A JWT may name an API key in its `kid` header and be signed with that key's
secret; otherwise it must be signed with the server's API secret. Participant tokens never work
here. Every error is the JSON body `{"error": {"code", "message"}}`; validation messages name the
offending field path (`policy.max_participants: ...`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any, Literal

import jwt
from aiohttp import web
from pydantic import Field, ValidationError

from finrtc.archive.targets import ResidencyError, target_name
from finrtc.auth import Grant, authorize_room, check_name, check_token_is_ascii, mint_token, verify_token
from finrtc.config import FinrtcConfig, RoomPolicy
from finrtc.config_base import StrictModel
from finrtc.errors import AuthError, BadRequestError, ForbiddenError
from finrtc.model import Role
from finrtc.signaling.context import CONFIG, ROOMS
from finrtc.signaling.openapi import build_openapi
from finrtc.signaling.parsing import check_name_fields, json_object, validated, validation_message

MAX_TOKEN_TTL_S = 24 * 3600
# Compared against when the key id is unknown so timing does not reveal which ids exist.
_DUMMY_SECRET = b"finrtc-no-such-key-" + b"x" * 32
API_PREFIX = "/v1/"


class CreateRoomBody(StrictModel):
    name: str
    policy: dict[str, Any] = Field(default_factory=dict)


class CloseRoomBody(StrictModel):
    reason: str = Field(default="closed by API", min_length=1, max_length=200)


class TokenBody(StrictModel):
    room: str
    identity: str
    role: Literal["agent", "customer", "observer"]
    ttl_s: int = Field(default=3600, ge=1, le=MAX_TOKEN_TTL_S)
    can_publish: bool | None = None
    can_subscribe: bool = True


# ---- authentication ----------------------------------------------------------------------------


def _basic_grant(credentials: str, api_keys: dict[str, str]) -> Grant:
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("the Basic credentials are not base64 of 'key:secret'") from None
    key_id, sep, secret = decoded.partition(":")
    if not sep:
        raise AuthError("the Basic credentials must be 'key:secret'")
    expected = api_keys.get(key_id)
    matched = hmac.compare_digest(secret.encode(), (expected or "").encode() or _DUMMY_SECRET)
    if expected is None or not matched:
        # One message for unknown key and wrong secret: no key enumeration.
        raise AuthError("unknown API key or wrong secret")
    return Grant(identity=f"apikey:{key_id}", room=None, role=Role.OBSERVER, can_publish=False,
                 can_subscribe=False, admin=True)


def _bearer_grant(token: str, request: web.Request) -> Grant:
    loaded = request.app[CONFIG]
    leeway = loaded.config.auth.token_leeway_s
    check_token_is_ascii(token)
    try:
        key_id = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError as error:
        raise AuthError(f"the access token is malformed: {error}") from None
    if key_id is None:
        grant = verify_token(token, loaded.api_secret, leeway)
        request.app[ROOMS].check_token_current(grant)
        return grant
    secret = loaded.config.auth.api_keys.get(str(key_id))
    if secret is None:
        raise AuthError("the access token names an unknown API key in its kid header")
    grant = verify_token(token, secret, leeway)
    if not grant.admin:
        # Participant tokens are signed with the API secret (WHIP/WHEP only trust that one).
        raise AuthError("a token signed with an API key's secret must be an admin token (admin: true)")
    return grant


def request_grant(request: web.Request) -> Grant:
    """Whoever calls: an API key (as a server-wide admin grant) or any valid token."""
    header = request.headers.get("Authorization")
    if not header:
        raise AuthError(
            "the room API needs credentials: HTTP Basic with an API key and its secret, or "
            "'Authorization: Bearer <admin token>'"
        )
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        return _basic_grant(value, request.app[CONFIG].config.auth.api_keys)
    if scheme.lower() == "bearer" and value.strip():
        return _bearer_grant(value.strip(), request)
    raise AuthError("the Authorization header must be 'Basic <key:secret>' or 'Bearer <token>'")


def check_scope(grant: Grant, room: str) -> None:
    if grant.room is not None and grant.room != room:
        raise ForbiddenError(f"this admin token is limited to room {grant.room!r}, not {room!r}")


def require_admin(request: web.Request, room: str | None) -> Grant:
    """An admin grant, for `room` when given. Runs before the body is read, so callers
    without credentials learn nothing about what a valid request looks like."""
    grant = request_grant(request)
    if not grant.admin:
        raise ForbiddenError(
            f"the room API needs an API key or an admin token; {grant.identity!r} holds a "
            f"{grant.role.value} participant token"
        )
    if room is not None:
        check_scope(grant, room)
    return grant


def authorize_room_request(request: web.Request, room: str) -> Grant:
    """For per-room routes that participants may also use (compliance report, consent):
    an API key or admin token for the room, or a participant token for that room."""
    grant = request_grant(request)
    authorize_room(grant, check_name(room, "room name"))
    return grant


def require_room(request: web.Request, room: str) -> object:
    """The open room, or NotFoundError / GoneError (closed)."""
    return request.app[ROOMS].get(room)


# ---- handlers ----------------------------------------------------------------------------------


def _check_policy_references(policy: RoomPolicy, config: FinrtcConfig) -> None:
    if policy.script is not None and policy.script not in config.compliance.scripts:
        known = ", ".join(sorted(config.compliance.scripts)) or "none configured"
        raise BadRequestError(
            f"policy.script: unknown script {policy.script!r} (compliance.scripts has: {known})"
        )
    if config.archive.enabled and policy.recording:
        try:
            target_name(config.archive, policy.residency)
        except ResidencyError as error:
            raise BadRequestError(f"policy.residency: {error}") from None
    if policy.retention_class not in config.archive.retention_classes:
        known = ", ".join(sorted(config.archive.retention_classes))
        raise BadRequestError(
            f"policy.retention_class: unknown class {policy.retention_class!r} "
            f"(archive.retention_classes has: {known})"
        )


async def create_room(request: web.Request) -> web.Response:
    grant = require_admin(request, None)
    parsed = validated(CreateRoomBody, await json_object(request))
    check_name_fields({"name": parsed.name})
    name = parsed.name
    check_scope(grant, name)
    config = request.app[CONFIG].config
    # The request states only what differs from the operator's default policy.
    merged = {**config.rooms.default_policy.model_dump(), **parsed.policy}
    try:
        policy = RoomPolicy.model_validate(merged)
    except ValidationError as error:
        raise BadRequestError(validation_message(error, "policy")) from None
    _check_policy_references(policy, config)
    room = request.app[ROOMS].create(name, policy)
    return web.json_response(room.to_json(), status=201, headers={"Location": f"/v1/rooms/{name}"})


async def list_rooms(request: web.Request) -> web.Response:
    grant = require_admin(request, None)
    rooms = request.app[ROOMS].rooms.values()
    visible = [room.to_json() for room in rooms if grant.room is None or room.name == grant.room]
    return web.json_response({"rooms": visible})


def _room_name(request: web.Request) -> str:
    return check_name(request.match_info["room"], "room name")


async def get_room(request: web.Request) -> web.Response:
    name = _room_name(request)
    require_admin(request, name)
    return web.json_response(request.app[ROOMS].get(name).to_json())


async def remove_participant(request: web.Request) -> web.Response:
    name = _room_name(request)
    identity = check_name(request.match_info["identity"], "identity")
    require_admin(request, name)
    room = request.app[ROOMS].get(name)
    await room.remove_participant(identity, reason="removed by API")
    return web.Response(status=204)


async def _close(request: web.Request, reason: str) -> web.Response:
    name = _room_name(request)
    require_admin(request, name)
    rooms = request.app[ROOMS]
    room = rooms.get(name)
    # Closing ends every session; the session extensions seal the recording before this returns.
    await rooms.close_room(name, reason, revoke_tokens=True)
    return web.json_response({"name": name, "closed": True, "reason": reason,
                              "last_session": room.last_session_id})


async def close_room(request: web.Request) -> web.Response:
    require_admin(request, _room_name(request))
    parsed = validated(CloseRoomBody, await json_object(request, optional=True))
    return await _close(request, parsed.reason)


async def delete_room(request: web.Request) -> web.Response:
    return await _close(request, "closed by API")


async def create_token(request: web.Request) -> web.Response:
    grant = require_admin(request, None)
    parsed = validated(TokenBody, await json_object(request))
    check_name_fields({"room": parsed.room, "identity": parsed.identity})
    check_scope(grant, parsed.room)
    issued_at = int(time.time())
    token = mint_token(
        request.app[CONFIG].api_secret,
        room=parsed.room,
        identity=parsed.identity,
        role=Role(parsed.role),
        ttl_s=parsed.ttl_s,
        can_publish=parsed.can_publish,
        can_subscribe=parsed.can_subscribe,
    )
    return web.json_response(
        {"token": token, "room": parsed.room, "identity": parsed.identity, "role": parsed.role,
         "expires_at": issued_at + parsed.ttl_s},
        status=201,
    )


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app[CONFIG].config))


async def _advertise_basic(request: web.Request, response: web.StreamResponse) -> None:
    """The error middleware announces Bearer only; the room API also takes Basic API keys."""
    path = request.path
    if response.status == 401 and path.startswith(API_PREFIX) and not path.endswith("/events"):
        response.headers["WWW-Authenticate"] = 'Basic realm="finrtc", Bearer realm="finrtc"'


def add_routes(app: web.Application) -> None:
    app.on_response_prepare.append(_advertise_basic)
    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_post("/v1/rooms", create_room)
    app.router.add_get("/v1/rooms", list_rooms)
    app.router.add_get("/v1/rooms/{room}", get_room)
    app.router.add_delete("/v1/rooms/{room}", delete_room)
    app.router.add_post("/v1/rooms/{room}/close", close_room)
    app.router.add_delete("/v1/rooms/{room}/participants/{identity}", remove_participant)
    app.router.add_post("/v1/tokens", create_token)
