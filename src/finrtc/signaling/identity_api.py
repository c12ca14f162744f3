"""HTTP handlers of identity checks; the server mounts them when `identity.enabled`.

    POST /v1/rooms/{room}/identity/liveness   start a liveness challenge (agent/admin)
    POST /v1/rooms/{room}/identity/reference  upload the ID portrait (agent/admin)
    POST /v1/rooms/{room}/identity/voiceprint enrol / verify a customer's voice (agent/admin)
    GET  /v1/rooms/{room}/identity            the live result, JSON or HTML (agent/observer/admin)
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web

from finrtc.archive import layout
from finrtc.archive.keys import fingerprint
from finrtc.archive.recorder import SessionRecorder
from finrtc.auth import Grant
from finrtc.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from finrtc.identity.runtime import IdentityRuntime, embed_portrait, sniff_image
from finrtc.identity.service import IdentitySession
from finrtc.identity.voice import Vector, VoiceEncoder, read_wav, voiced
from finrtc.identity.voiceprint import Enrolment, VoiceprintSession, new_enrolment_id
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
    voice = report.get("voice_match")
    if voice is not None:
        rows.append(row("voice match", voice["matched"]))
        for result in voice["results"]:
            outcome = f"{result['decision']} (score {result['score']})"
            rows.append(row(f"voice {result['participant']}", outcome))
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

    routes = [
        web.post("/v1/rooms/{room}/identity/liveness", start_liveness),
        web.post("/v1/rooms/{room}/identity/reference", upload_reference),
        web.get("/v1/rooms/{room}/identity", get_identity),
    ]
    if runtime.voice_encoder is not None:
        routes.append(web.post(
            "/v1/rooms/{room}/identity/voiceprint", voiceprint_handler(runtime, authorize, recorder, live)
        ))
    return routes


def purge_check(found: SessionRecorder) -> Callable[[], bool]:
    """True while the recorded session's data key can still be unsealed (not crypto-shredded)."""
    storage = found.storage
    names = [layout.join(found.prefix, layout.sealed_key_name(fingerprint(bytes(key))))
             for key in found.archive_public_keys]

    def alive() -> bool:
        return any(storage.exists(name) for name in names)

    return alive


def voiceprint_handler(
    runtime: IdentityRuntime, authorize: Authorize, recorder: FindRecorder,
    live: Callable[[str], IdentitySession],
) -> Callable[[web.Request], Any]:
    encoder = runtime.voice_encoder
    assert encoder is not None
    config = runtime.config
    sealing: set[asyncio.Task[dict[str, Any]]] = set()

    def voice_of(room: str) -> VoiceprintSession:
        voice = live(room).voice
        assert voice is not None
        return voice

    def sink_for(room: str, voice: VoiceprintSession, grant: Grant) -> None:
        """Wire the session's enrolments into the call's archive (idempotent)."""
        found = recorder(room)
        if found is None:
            raise ConflictError(
                f"room {room!r} is not recorded: a voiceprint can only be kept sealed in its archive"
            )
        if voice.enrol_sink is not None:
            return
        loop = asyncio.get_running_loop()
        alive = purge_check(found)

        def sink(participant: str, embedding: Vector, speech_s: float, media_time: float) -> None:
            # Called on a media worker: sealing is storage I/O, so it goes to the loop's executor.
            def schedule() -> None:
                task = loop.create_task(seal(found, voice, participant, embedding, speech_s, media_time,
                                             grant.identity, alive))
                # One per enrolment request (an enrolment task runs once): bounded.
                sealing.add(task)
                task.add_done_callback(sealing.discard)
            if not loop.is_closed():
                loop.call_soon_threadsafe(schedule)

        voice.enrol_sink = sink

    async def seal(found: SessionRecorder, voice: VoiceprintSession, customer: str, embedding: Vector,
                   speech_s: float, media_time: float | None, by: str, alive: Callable[[], bool],
                   ) -> dict[str, Any]:
        enrolment_id = new_enrolment_id()
        data = np.asarray(embedding, dtype="<f4").tobytes()
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(None, found.store_attachment, f"{enrolment_id}.enc", data)
        evidence: dict[str, Any] = {
            "enrolment": enrolment_id, "customer": customer, "voiceprint": stored["file"],
            "ciphertext_sha256": stored["ciphertext_sha256"], "speech_s": round(speech_s, 2),
            "enrolled_by": by,
        }
        if media_time is not None:
            evidence["media_time"] = round(media_time, 3)
        runtime.voiceprints.add(Enrolment(enrolment_id, customer, embedding.copy(), dict(evidence), alive))
        voice.send("identity.voiceprint_enrolled", dict(evidence))
        return {**evidence, "models": voice.digests}

    async def enrol_clip(request: web.Request, room: str, grant: Grant) -> web.StreamResponse:
        limit = config.max_voice_clip_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            return json_error(413, "payload_too_large", f"the clip is larger than {limit} bytes")
        data = await request.content.read(limit + 1)
        if len(data) > limit:
            return json_error(413, "payload_too_large", f"the clip is larger than {limit} bytes")
        if not (data.startswith(b"RIFF") and data[8:12] == b"WAVE"):
            return json_error(415, "unsupported_media_type", "the body is not a WAV file")
        customer = request.query.get("participant", "")
        if not customer:
            raise BadRequestError("name the customer the clip is of: ?participant=<identity>")
        voice = voice_of(room)
        found = recorder(room)
        if found is None:
            raise ConflictError(
                f"room {room!r} is not recorded: a voiceprint can only be kept sealed in its archive"
            )
        loop = asyncio.get_running_loop()
        embedding, speech_s = await loop.run_in_executor(
            None, embed_clip, encoder, data, config.voice_enrol_s
        )
        evidence = await seal(found, voice, customer, embedding, speech_s, None, grant.identity,
                              purge_check(found))
        return web.json_response(evidence, status=201)

    async def handle(request: web.Request) -> web.StreamResponse:
        room = request.match_info["room"]
        grant = authorize(request, room)
        _staff(grant, "enrol or verify a voiceprint")
        if request.content_type in ("audio/wav", "audio/x-wav", "audio/wave"):
            return await enrol_clip(request, room, grant)
        if request.content_type != "application/json":
            return json_error(415, "unsupported_media_type",
                              "send JSON ({\"action\": \"enrol\" | \"verify\", ...}) or an audio/wav clip")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or body.get("action") not in ("enrol", "verify") or not isinstance(
                body.get("participant"), str):
            raise BadRequestError('the body must be JSON like {"action": "enrol", "participant": "carol"}')
        participant = body["participant"]
        voice = voice_of(room)
        if body["action"] == "enrol":
            sink_for(room, voice, grant)
            return web.json_response(voice.start_enrol(participant, grant.identity), status=202)
        enrolment_id, customer = body.get("enrolment"), body.get("customer", participant)
        if not isinstance(customer, str) or not (enrolment_id is None or isinstance(enrolment_id, str)):
            raise BadRequestError("enrolment and customer must be strings")
        enrolment = runtime.voiceprints.find(customer=customer, enrolment_id=enrolment_id)
        if enrolment is None:
            raise NotFoundError(f"no voiceprint is enrolled for {enrolment_id or customer!r} "
                                "(never enrolled, or its call's archive was purged)")
        return web.json_response(voice.start_verify(participant, enrolment, grant.identity), status=202)

    return handle


def embed_clip(encoder: VoiceEncoder, data: bytes, needed_s: float) -> tuple[Vector, float]:
    """(voiceprint, seconds of speech) of an uploaded WAV clip (blocking)."""
    speech = voiced(read_wav(data))
    seconds = speech.size / 16_000
    if seconds < needed_s:
        raise BadRequestError(
            f"the clip has {seconds:.1f} s of speech; an enrolment needs {needed_s:.0f} s")
    return encoder.embed_utterance(speech), seconds
