"""HTTP handlers of identity checks; the server mounts them when `identity.enabled`.

    POST /v1/rooms/{room}/identity/liveness   start a liveness challenge (agent/admin)
    POST /v1/rooms/{room}/identity/reference  upload the ID portrait (agent/admin)
    GET  /v1/rooms/{room}/identity            the live result, JSON or HTML (agent/observer/admin)
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from finrtc.archive.recorder import SessionRecorder
from finrtc.auth import Grant
from finrtc.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from finrtc.identity.runtime import IdentityRuntime, embed_portrait, sniff_image
from finrtc.identity.service import IdentitySession
from finrtc.model import Role
from finrtc.signaling.compliance_api import _prefers_html
from finrtc.signaling.http_errors import json_error

Authorize = Callable[[web.Request, str], Grant]
RequiredChecks = Callable[[str], list[str]]
FindRecorder = Callable[[str], "SessionRecorder | None"]

STAFF_ROLES = frozenset({Role.AGENT, Role.OBSERVER})


def _staff(grant: Grant, action: str, roles: frozenset[Role] = frozenset({Role.AGENT})) -> None:
    if not (grant.admin or grant.role in roles):
        raise ForbiddenError(f"role {grant.role.value} may not {action}; use an agent or admin token")


def render_html(report: dict[str, Any]) -> str:
    def row(label: str, value: object) -> str:
        return f"<tr><th>{html.escape(label)}</th><td>{html.escape(str(value))}</td></tr>"

    rows = [row("required", ", ".join(report["required"]) or "nothing")]
    rows.append(row("satisfied", report["satisfied"]))
    rows.append(row("liveness passed", report["liveness"]["passed"]))
    for challenge in report["liveness"]["challenges"]:
        steps = "; ".join(
            f"{s['action']} " + (f"in {s['elapsed_s']} s" if s["elapsed_s"] is not None else "not seen")
            for s in challenge["steps"]
        )
        rows.append(row(f"challenge {challenge['challenge']}", f"{challenge['state']} ({steps})"))
    rows.append(row("face match", report["face_match"]["matched"]))
    for name, result in report["face_match"]["results"].items():
        if result:
            rows.append(row(f"match {name}", f"{result['decision']} (similarity {result['similarity']})"))
    for name, digest in report["models"].items():
        rows.append(row(f"model {name}", digest))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Identity checks "
        f"{html.escape(report['room'])}</title></head><body><h1>Identity checks: "
        f"{html.escape(report['room'])}</h1><table id='identity'>{''.join(rows)}</table></body></html>"
    )


def identity_routes(
    runtime: IdentityRuntime, authorize: Authorize, required: RequiredChecks, recorder: FindRecorder
) -> list[web.RouteDef]:
    def live(room: str) -> IdentitySession:
        session = runtime.live.get(room)
        if session is None:
            raise ConflictError(f"room {room!r} has no live call; identity checks run during a call")
        return session

    async def start_liveness(request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        grant = authorize(request, room)
        _staff(grant, "start a liveness challenge")
        try:
            body = await request.json() if request.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequestError('the body must be JSON like {"participant": "carol"}') from None
        if not isinstance(body, dict) or not isinstance(body.get("participant"), str):
            raise BadRequestError('the body must be JSON like {"participant": "carol"}')
        actions = body.get("actions")
        names_ok = isinstance(actions, list) and all(isinstance(a, str) for a in actions)
        if actions is not None and not names_ok:
            raise BadRequestError("actions must be a list of action names")
        challenge = live(room).start_challenge(body["participant"], actions)
        return web.json_response(challenge, status=201)

    async def upload_reference(request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        grant = authorize(request, room)
        _staff(grant, "upload an ID portrait")
        limit = runtime.config.max_reference_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            return json_error(413, "payload_too_large", f"the portrait is larger than {limit} bytes")
        content_type = request.content_type
        if content_type not in ("image/jpeg", "image/png"):
            return json_error(
                415, "unsupported_media_type", "send the portrait as image/jpeg or image/png"
            )
        data = await request.content.read(limit + 1)
        if len(data) > limit:
            return json_error(413, "payload_too_large", f"the portrait is larger than {limit} bytes")
        if sniff_image(data) is None:
            return json_error(415, "unsupported_media_type", "the body is not a JPEG or PNG image")
        session = live(room)
        found = recorder(room)
        if found is None:
            raise ConflictError(
                f"room {room!r} is not recorded: the portrait can only be kept encrypted in its archive"
            )
        loop = asyncio.get_running_loop()
        embedding = await loop.run_in_executor(None, embed_portrait, runtime.models, data)
        name = f"reference-{secrets.token_hex(6)}.enc"
        stored = await loop.run_in_executor(None, found.store_attachment, name, data)
        evidence = {"reference": stored["file"], "sha256": stored["sha256"],
                    "ciphertext_sha256": stored["ciphertext_sha256"], "bytes": len(data),
                    "content_type": content_type, "uploaded_by": grant.identity}
        session.set_reference(embedding, evidence)
        return web.json_response({"reference": evidence}, status=201)

    async def get_identity(request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        grant = authorize(request, room)
        _staff(grant, "read identity results", STAFF_ROLES)
        session = runtime.lookup(room)
        if session is None:
            raise NotFoundError(f"room {room!r} has had no call with identity checks")
        report = session.report(required(room))
        if _prefers_html(request):
            return web.Response(text=render_html(report), content_type="text/html")
        return web.json_response(report)

    return [
        web.post("/v1/rooms/{room}/identity/liveness", start_liveness),
        web.post("/v1/rooms/{room}/identity/reference", upload_reference),
        web.get("/v1/rooms/{room}/identity", get_identity),
    ]
