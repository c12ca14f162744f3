"""The compliance HTTP handlers on a real aiohttp server bound to 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from finrtc.auth import Grant, authorize_room, bearer_token, mint_token, verify_token
from finrtc.compliance.monitor import ComplianceMonitor
from finrtc.compliance.recognizer import RecognitionResult, builtin_model
from finrtc.compliance.script import load_script
from finrtc.compliance.workers import RecognizerPool
from finrtc.errors import ConflictError, FinrtcError, ForbiddenError, NotFoundError
from finrtc.model import MediaKind, Role, Severity, TrackInfo
from finrtc.signaling.compliance_api import compliance_routes

SECRET = "test-secret-which-is-long-enough-for-hs256"
STATUS = {NotFoundError: 404, ForbiddenError: 403, ConflictError: 409}


def token(role: Role, identity: str = "user", room: str = "sale1") -> dict[str, str]:
    value = mint_token(SECRET, room=room, identity=identity, role=role)
    return {"Authorization": f"Bearer {value}"}


def authorize(request: web.Request, room: str) -> Grant:
    grant = verify_token(bearer_token(request.headers.get("Authorization")), SECRET)
    authorize_room(grant, room)
    return grant


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    # What the server's middleware does: typed errors become JSON 4xx.
    try:
        return await handler(request)
    except FinrtcError as error:
        status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
        return web.json_response({"error": str(error)}, status=status)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient[Any, Any], ComplianceMonitor, list[Any]]]:
    pool = RecognizerPool(builtin_model())  # not started: these tests feed text results
    published: list[Any] = []

    def publish(kind: str, data: dict[str, Any], severity: Severity, audience: Any) -> None:
        published.append((kind, data))

    session = ComplianceMonitor(
        "sale1", load_script("builtin:demo_insurance_en"), pool, publish, require_consent=True
    )
    session.start()
    sessions = {"sale1": session}
    app = web.Application(middlewares=[errors])
    app.add_routes(compliance_routes(sessions.get, authorize))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client, session, published
    await client.close()
    await session.close(flush_timeout=1.0)
    pool.close()


async def test_report_json_and_html(
    setup: tuple[TestClient[Any, Any], ComplianceMonitor, list[Any]],
) -> None:
    client, _session, _ = setup
    response = await client.get("/v1/rooms/sale1/compliance", headers=token(Role.AGENT))
    assert response.status == 200 and response.content_type == "application/json"
    report = await response.json()
    assert report["status"] == "live" and report["can_submit"] is False
    assert [stage["status"] for stage in report["stages"]][:2] == ["pending", "pending"]
    assert report["consent"] == {"required": True, "given": False, "events": []}

    browser = {**token(Role.OBSERVER), "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    response = await client.get("/v1/rooms/sale1/compliance", headers=browser)
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    assert "Agent identity and licence" in page and "Sale can be submitted: <b>no</b>" in page


async def test_consent_then_stage_then_final_report(
    setup: tuple[TestClient[Any, Any], ComplianceMonitor, list[Any]],
) -> None:
    client, session, published = setup
    response = await client.post("/v1/rooms/sale1/consent", headers=token(Role.AGENT))
    assert response.status == 403
    response = await client.post(
        "/v1/rooms/sale1/consent", headers=token(Role.CUSTOMER, "bob"), json={"granted": True}
    )
    assert response.status == 200 and (await response.json())["consent_given"] is True
    consent = [data for kind, data in published if kind == "compliance.consent"]
    assert consent[0]["participant"] == "bob" and consent[0]["source"] == "ui"
    response = await client.post(
        "/v1/rooms/sale1/consent", headers=token(Role.CUSTOMER, "bob"), data=b"{nope"
    )
    assert response.status == 415
    for bad in (b"{nope", b'{"granted": "yes"}', b"\xff\xfe", b"[true]"):
        response = await client.post(
            "/v1/rooms/sale1/consent",
            headers={**token(Role.CUSTOMER, "bob"), "Content-Type": "application/json"}, data=bad,
        )
        assert response.status == 400, bad

    agent = TrackInfo("sale1", "s", "alice", Role.AGENT, "t1", MediaKind.AUDIO)
    session.observe(agent, RecognitionResult(
        "x", "hello my name is alice", (), 4.0, 5.0, 0.2, "pocketsphinx", "0" * 64
    ))
    await session.close(flush_timeout=1.0)
    response = await client.get("/v1/rooms/sale1/compliance", headers=token(Role.AGENT))
    report = await response.json()
    assert report["status"] == "final"
    identity = report["stages"][0]
    assert identity["status"] == "completed" and identity["media_time"] == 4.0
    assert identity["matched_text"] == "my name is"
    assert report["stages"][1]["status"] == "missed"
    response = await client.post(
        "/v1/rooms/sale1/consent", headers=token(Role.CUSTOMER, "bob"), json={"granted": False}
    )
    assert response.status == 409


async def test_access_rules(
    setup: tuple[TestClient[Any, Any], ComplianceMonitor, list[Any]],
) -> None:
    client, _, _ = setup
    response = await client.get("/v1/rooms/sale1/compliance", headers=token(Role.CUSTOMER))
    assert response.status == 403
    response = await client.get(
        "/v1/rooms/other/compliance", headers=token(Role.AGENT, room="other")
    )
    assert response.status == 404
    response = await client.get("/v1/rooms/sale1/compliance", headers=token(Role.AGENT, room="x"))
    assert response.status == 403
