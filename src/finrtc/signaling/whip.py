"""WHIP (RFC 9725) publishing and WHEP playback over plain HTTP.

POST an SDP offer with a bearer token → 201 Created with the SDP answer, the `Location` of the
session resource, an `ETag` naming its ICE session and, when ICE servers are configured, one
`Link: <url>; rel="ice-server"` per server URL. PATCH the Location with an
`application/trickle-ice-sdpfrag` body (RFC 8840) and `If-Match: <ETag>` to trickle candidates;
DELETE it to end the session. OPTIONS answers CORS preflights for browser clients. WHEP viewers
choose whom to watch with `?participant=ID` or `?role=agent|customer`; their tracks bind to that
publisher now or as soon as it publishes, which is how tracks published later reach them
without renegotiation.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from finrtc.auth import Grant, authorize_room, bearer_token, check_name, verify_token
from finrtc.config import IceServerConfig
from finrtc.errors import BadRequestError, ForbiddenError, NotFoundError
from finrtc.model import Role
from finrtc.participant import IceCredentials, SubscriptionTarget
from finrtc.room import Room
from finrtc.signaling.context import CONFIG, ROOMS

SDP_TYPE = "application/sdp"
TRICKLE_TYPE = "application/trickle-ice-sdpfrag"
ENDPOINT_ALLOW = "OPTIONS, POST"
SESSION_ALLOW = "DELETE, OPTIONS, PATCH"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
CORS_EXPOSE_HEADERS = "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After"
CORS_MAX_AGE_S = 600
KINDS = ("whip", "whep")
# A client gathers a handful of candidates per interface; more in one PATCH is abuse of the ICE
# agent's check list, not trickling.
MAX_TRICKLE_CANDIDATES = 64


def request_grant(request: web.Request) -> Grant:
    loaded = request.app[CONFIG]
    token = bearer_token(request.headers.get("Authorization"))
    grant = verify_token(token, loaded.api_secret, loaded.config.auth.token_leeway_s)
    request.app[ROOMS].check_token_current(grant)
    return grant


async def read_offer(request: web.Request) -> str:
    if request.content_type != SDP_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"the offer must be sent as Content-Type: {SDP_TYPE}")
    body = await request.read()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the SDP offer is not valid UTF-8") from None


def _ice_credentials(sdp: str) -> tuple[str | None, str | None]:
    """The first ice-ufrag / ice-pwd of an offer (BUNDLE: every section shares them)."""
    ufrag = pwd = None
    for line in sdp.splitlines():
        if ufrag is None and line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:"):].strip()
        elif pwd is None and line.startswith("a=ice-pwd:"):
            pwd = line[len("a=ice-pwd:"):].strip()
    return ufrag, pwd


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_links(servers: list[IceServerConfig]) -> list[str]:
    """RFC 9725 section 4.6: one Link header value per STUN/TURN URL."""
    links = []
    for server in servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username is not None:
                link += f"; username={_quoted(server.username)}"
            if server.credential is not None:
                link += f'; credential={_quoted(server.credential)}; credential-type="password"'
            links.append(link)
    return links


def _created(
    request: web.Request, kind: str, room: str, resource_id: str, offer: str, answer: str
) -> web.Response:
    ufrag, pwd = _ice_credentials(offer)
    etag = f'"{secrets.token_urlsafe(12)}"'
    # No await since the room created the resource: it cannot have ended in between.
    request.app[ROOMS].get(room).bind_ice(resource_id, kind, IceCredentials(ufrag, pwd, etag))
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Location"] = f"/{kind}/{room}/{resource_id}"
    headers["ETag"] = etag
    # TURN credentials only ever go to an authenticated client, never in OPTIONS answers.
    for link in ice_server_links(request.app[CONFIG].config.media.ice_servers):
        headers.add("Link", link)
    return web.Response(status=201, text=answer, content_type=SDP_TYPE, headers=headers)


async def whip_publish(request: web.Request) -> web.Response:
    room_name = check_name(request.match_info["room"], "room name")
    grant = request_grant(request)
    authorize_room(grant, room_name, publish=True)
    offer = await read_offer(request)
    room = request.app[ROOMS].get_for_publish(room_name)
    resource_id, answer = await room.publish(grant, offer)
    return _created(request, "whip", room_name, resource_id, offer, answer)


def subscription_target(request: web.Request, grant: Grant) -> SubscriptionTarget:
    participant = request.query.get("participant")
    role = request.query.get("role")
    if participant is not None:
        check_name(participant, "participant")
    target_role = None
    if role is not None:
        try:
            target_role = Role(role)
        except ValueError:
            raise BadRequestError(f"role must be agent, customer or observer, not {role!r}") from None
    if participant is not None and participant == grant.identity:
        raise BadRequestError("a participant cannot subscribe to itself")
    return SubscriptionTarget(participant=participant, role=target_role)


async def whep_play(request: web.Request) -> web.Response:
    room_name = check_name(request.match_info["room"], "room name")
    grant = request_grant(request)
    authorize_room(grant, room_name, subscribe=True)
    target = subscription_target(request, grant)
    offer = await read_offer(request)
    room = request.app[ROOMS].get(room_name)
    resource_id, answer = await room.subscribe(grant, offer, target)
    return _created(request, "whep", room_name, resource_id, offer, answer)


def _session_kind(request: web.Request) -> str:
    return "whip" if request.path.startswith("/whip/") else "whep"


def _owned_session(request: web.Request) -> tuple[Room, str, str]:
    """Authenticate and find the session resource: (room, resource id, kind)."""
    kind = _session_kind(request)
    room_name = check_name(request.match_info["room"], "room name")
    grant = request_grant(request)
    authorize_room(grant, room_name)
    room = request.app[ROOMS].get(room_name)
    resource_id = request.match_info["resource"]
    owner = room.owner_of(resource_id, kind)
    if owner != grant.identity and not grant.admin:
        raise ForbiddenError("only the participant that created this session (or an admin) may change it")
    return room, resource_id, kind


async def end_session(request: web.Request) -> web.Response:
    room, resource_id, _ = _owned_session(request)
    # RFC 9725: DELETE needs no entity-tag; it ends whatever ICE session is current.
    await room.end_resource(resource_id, reason="ended by client")
    return web.Response(status=200)


@dataclass
class TrickleFragment:
    ufrag: str | None
    pwd: str | None
    # (mid, m-line index, candidate attribute value without "candidate:")
    candidates: list[tuple[str | None, int, str]]
    end_of_candidates: bool


def parse_sdpfrag(text: str) -> TrickleFragment:
    """Parse an RFC 8840 SDP fragment: ICE credentials, per-section candidates, end marker."""
    ufrag = pwd = None
    candidates: list[tuple[str | None, int, str]] = []
    end = False
    index = 0
    mid: str | None = None
    seen_media = False
    pending: list[tuple[int, str]] = []  # candidates of the current section before its a=mid

    def flush() -> None:
        candidates.extend((mid, position, value) for position, value in pending)
        pending.clear()

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise BadRequestError(f"line {number} of the SDP fragment is not an SDP line: {line[:60]!r}")
        if line.startswith("m="):
            flush()
            if seen_media:
                index += 1
            seen_media = True
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):].strip() or None
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:"):].strip()
        elif line.startswith("a=ice-pwd:"):
            pwd = line[len("a=ice-pwd:"):].strip()
        elif line.startswith("a=candidate:"):
            pending.append((index, line[len("a=candidate:"):].strip()))
        elif line == "a=end-of-candidates":
            end = True
        elif not line.startswith(("a=", "m=", "c=")):
            # RFC 8840 fragments carry only attribute and media lines.
            raise BadRequestError(
                f"line {number} of the SDP fragment is not allowed in trickle ICE: {line[:60]!r}"
            )
    flush()
    if len(candidates) > MAX_TRICKLE_CANDIDATES:
        raise BadRequestError(
            f"the SDP fragment has {len(candidates)} candidates; at most {MAX_TRICKLE_CANDIDATES} per PATCH"
        )
    return TrickleFragment(ufrag, pwd, candidates, end)


def _etag_matches(if_match: str, etag: str) -> bool:
    """RFC 9110 If-Match: '*' or a list of entity-tags compared strongly (weak tags never match)."""
    if if_match.strip() == "*":
        return True
    return any(tag.strip() == etag for tag in if_match.split(",") if not tag.strip().startswith("W/"))


async def trickle(request: web.Request) -> web.Response:
    """PATCH: trickle ICE candidates into a running session (RFC 9725 section 4.3)."""
    room, resource_id, kind = _owned_session(request)
    if request.content_type != TRICKLE_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"PATCH bodies must be Content-Type: {TRICKLE_TYPE}")
    info = room.ice_credentials(resource_id, kind)
    if info is None:
        raise NotFoundError(f"{kind.upper()} session {resource_id!r} has no ICE session")
    if_match = request.headers.get("If-Match")
    if if_match is None:
        raise web.HTTPPreconditionRequired(
            text=f"send If-Match with the session's ETag ({info.etag}) so candidates reach the "
            "right ICE session"
        )
    if not _etag_matches(if_match, info.etag):
        raise web.HTTPPreconditionFailed(
            text=f"If-Match {if_match} does not name the current ICE session {info.etag}"
        )
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the SDP fragment is not valid UTF-8") from None
    fragment = parse_sdpfrag(text)
    restart = (fragment.ufrag is not None and fragment.ufrag != info.ufrag) or (
        fragment.pwd is not None and fragment.pwd != info.pwd
    )
    if restart:
        # RFC 9725: a session that trickles but cannot restart ICE answers 422.
        raise web.HTTPUnprocessableEntity(
            text="ICE restart is not supported: end this session with DELETE and POST a new offer"
        )
    await room.add_remote_candidates(resource_id, kind, fragment.candidates, fragment.end_of_candidates)
    return web.Response(status=204)


def _origin_allowed(request: web.Request) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when the origin is not allowed."""
    origin = request.headers.get("Origin")
    allowed = request.app[CONFIG].config.server.cors_allow_origins
    if origin is None:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


async def options(request: web.Request) -> web.Response:
    """CORS preflight for browsers, or plain capability discovery (Allow, Accept-Post/-Patch)."""
    is_session = "resource" in request.match_info
    allow = SESSION_ALLOW if is_session else ENDPOINT_ALLOW
    headers = {"Allow": allow}
    if is_session:
        headers["Accept-Patch"] = TRICKLE_TYPE
    else:
        headers["Accept-Post"] = SDP_TYPE
    requested = request.headers.get("Access-Control-Request-Method")
    if request.headers.get("Origin") is not None and requested is not None:
        if _origin_allowed(request) is None:
            raise ForbiddenError(
                f"origin {request.headers['Origin']!r} may not call this server; add it to "
                "server.cors_allow_origins"
            )
        if requested.upper() not in allow.split(", "):
            raise web.HTTPMethodNotAllowed(requested, allow.split(", "))
        headers["Access-Control-Allow-Methods"] = allow
        headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
    return web.Response(status=204, headers=headers)


async def _cors_and_accept_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Runs for every response, errors included, so browsers can read them too."""
    parts = request.path.split("/")
    if len(parts) < 3 or parts[1] not in KINDS:
        return
    is_session = len(parts) == 4
    if response.status == 415:
        if is_session:
            response.headers["Accept-Patch"] = TRICKLE_TYPE
        else:
            response.headers["Accept-Post"] = SDP_TYPE
    allowed = request.app[CONFIG].config.server.cors_allow_origins
    if allowed and "*" not in allowed:
        # The answer depends on Origin: caches must not hand one origin's answer to another.
        response.headers.add("Vary", "Origin")
    origin = _origin_allowed(request)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS


def add_routes(app: web.Application) -> None:
    app.on_response_prepare.append(_cors_and_accept_headers)
    for kind, handler in (("whip", whip_publish), ("whep", whep_play)):
        app.router.add_post(f"/{kind}/{{room}}", handler)
        app.router.add_route("OPTIONS", f"/{kind}/{{room}}", options)
        app.router.add_patch(f"/{kind}/{{room}}/{{resource}}", trickle)
        app.router.add_delete(f"/{kind}/{{room}}/{{resource}}", end_session)
        app.router.add_route("OPTIONS", f"/{kind}/{{room}}/{{resource}}", options)
