"""WHIP (RFC 9725) publishing and WHEP playback over plain HTTP.

POST an SDP offer with a bearer token → 201 Created, Location of the session resource, SDP
answer. DELETE the Location to end it. WHEP viewers choose whom to watch with `?participant=ID`
or `?role=agent|customer`; their tracks bind to that publisher now or as soon as it publishes,
which is how tracks published later reach them without renegotiation.
"""

from __future__ import annotations

from aiohttp import web

from finrtc.auth import Grant, authorize_room, bearer_token, check_name, verify_token
from finrtc.errors import BadRequestError, ForbiddenError
from finrtc.hooks.contract import Role
from finrtc.participant import SubscriptionTarget
from finrtc.signaling.context import CONFIG, ROOMS

SDP_TYPE = "application/sdp"


def request_grant(request: web.Request) -> Grant:
    loaded = request.app[CONFIG]
    token = bearer_token(request.headers.get("Authorization"))
    return verify_token(token, loaded.api_secret, loaded.config.auth.token_leeway_s)


async def read_offer(request: web.Request) -> str:
    if request.content_type != SDP_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"the offer must be sent as Content-Type: {SDP_TYPE}")
    body = await request.read()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the SDP offer is not valid UTF-8") from None


def _created(request: web.Request, kind: str, room: str, resource_id: str, answer: str) -> web.Response:
    location = f"/{kind}/{room}/{resource_id}"
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP_TYPE,
        headers={"Location": location, "ETag": f'"{resource_id}"'},
    )


async def whip_publish(request: web.Request) -> web.Response:
    room_name = check_name(request.match_info["room"], "room name")
    grant = request_grant(request)
    authorize_room(grant, room_name, publish=True)
    offer = await read_offer(request)
    room = request.app[ROOMS].get_for_publish(room_name)
    resource_id, answer = await room.publish(grant, offer)
    return _created(request, "whip", room_name, resource_id, answer)


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
    return _created(request, "whep", room_name, resource_id, answer)


async def end_session(request: web.Request) -> web.Response:
    kind = "whip" if request.path.startswith("/whip/") else "whep"
    room_name = request.match_info["room"]
    grant = request_grant(request)
    authorize_room(grant, room_name)
    room = request.app[ROOMS].get(room_name)
    owner = room.owner_of(request.match_info["resource"], kind)
    if owner != grant.identity and not grant.admin:
        raise ForbiddenError("only the participant that created this session (or an admin) may end it")
    await room.end_resource(request.match_info["resource"], reason="ended by client")
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whip/{room}", whip_publish)
    app.router.add_delete("/whip/{room}/{resource}", end_session)
    app.router.add_post("/whep/{room}", whep_play)
    app.router.add_delete("/whep/{room}/{resource}", end_session)
