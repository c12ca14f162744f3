"""HTTP handlers for compliance; the server mounts them.

    routes = compliance_routes(lookup, authorize)
    app.add_routes(routes)

`lookup(room)` returns the room's ComplianceMonitor (live, or kept after the call so the final
report stays readable), a stored final report dict, or None. `authorize(request, room)` returns
the caller's `finrtc.auth.Grant` (sync or async) or raises AuthError / ForbiddenError.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from finrtc.auth import Grant
from finrtc.compliance.monitor import ComplianceMonitor
from finrtc.compliance.report import render_html
from finrtc.config_base import StrictModel
from finrtc.errors import ConflictError, ForbiddenError, NotFoundError
from finrtc.model import Role
from finrtc.signaling.parsing import json_object, validated

Lookup = Callable[[str], "ComplianceMonitor | dict[str, Any] | None"]
Authorize = Callable[[web.Request, str], "Grant | Awaitable[Grant]"]
# Raises NotFoundError (or its GoneError) unless the room is open.
RequireRoom = Callable[[web.Request, str], object]
# audit(room, identity, role, admin): the read goes into the recorded session's access log.
Audit = Callable[[str, str, str, bool], Awaitable[None]]


class ConsentBody(StrictModel):
    granted: bool = True


def _no_rooms(request: web.Request, room: str) -> object:
    raise NotFoundError(f"room {room!r} does not exist")

REPORT_ROLES = frozenset({Role.AGENT, Role.OBSERVER})


def _prefers_html(request: web.Request) -> bool:
    """True when Accept ranks text/html above application/json (browsers do)."""
    best_html = best_json = -1.0
    for index, part in enumerate(request.headers.get("Accept", "").split(",")):
        fields = [item.strip() for item in part.split(";")]
        media = fields[0].lower()
        quality = 1.0
        for parameter in fields[1:]:
            if parameter.startswith("q="):
                try:
                    quality = float(parameter[2:])
                except ValueError:
                    quality = 0.0
        # Earlier entries win ties, as browsers list what they prefer first.
        score = quality - index * 1e-6
        if media == "text/html":
            best_html = max(best_html, score)
        elif media in ("application/json", "*/*", "application/*"):
            best_json = max(best_json, score)
    return best_html > best_json


async def _grant(authorize: Authorize, request: web.Request, room: str) -> Grant:
    result = authorize(request, room)
    if inspect.isawaitable(result):
        return await result
    return result


def compliance_routes(
    lookup: Lookup, authorize: Authorize, require_room: RequireRoom = _no_rooms,
    audit: Audit | None = None,
) -> list[web.RouteDef]:
    """`require_room(request, room)` raises unless the room is open: an open room without a
    compliance session answers 409 (its policy names no script), a closed one 410, others 404."""

    def missing(request: web.Request, room: str, what: str) -> Exception:
        require_room(request, room)
        return ConflictError(f"room {room!r} has {what}")

    async def get_report(request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        grant = await _grant(authorize, request, room)
        if not (grant.admin or grant.role in REPORT_ROLES):
            raise ForbiddenError(
                f"role {grant.role.value} may not read the compliance report; use an agent, "
                "observer or admin token"
            )
        found = lookup(room)
        if found is None:
            raise missing(request, room, "no compliance session (its policy names no script)")
        report = found.report() if isinstance(found, ComplianceMonitor) else found
        if audit is not None:
            await audit(room, grant.identity, grant.role.value, grant.admin)
        if _prefers_html(request):
            return web.Response(text=render_html(report), content_type="text/html")
        return web.json_response(report, dumps=lambda value: json.dumps(value, ensure_ascii=False))

    async def post_consent(request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        grant = await _grant(authorize, request, room)
        if grant.role is not Role.CUSTOMER:
            raise ForbiddenError("only the customer can give or withdraw consent")
        found = lookup(room)
        if not isinstance(found, ComplianceMonitor):
            raise missing(request, room, "no live compliance session")
        body = await json_object(request, optional=True, example='{"granted": true}')
        granted = validated(ConsentBody, body).granted
        state = found.record_consent(grant.identity, grant.role, granted)
        return web.json_response(state)

    return [
        web.get("/v1/rooms/{room}/compliance", get_report),
        web.post("/v1/rooms/{room}/consent", post_consent),
    ]
