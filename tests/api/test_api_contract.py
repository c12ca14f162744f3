"""The OpenAPI document is valid OpenAPI 3.1 and lists exactly the routes the server has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from finrtc.assembly import build_app
from finrtc.signaling.openapi import build_openapi
from tests.conftest import RunningServer, make_loaded

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Documented routes that another component mounts (finrtc.signaling.compliance_api). While one of them
# is not mounted yet the contract test names it here; once it is mounted the test fails until it
# is removed from this set, so the set cannot silently outlive its reason.
def routed(app: web.Application) -> set[tuple[str, str]]:
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    # aiohttp answers HEAD for every GET route (RFC 9110: GET without a body): implied, not listed.
    return {(method, path) for method, path in routes if not (method == "HEAD" and ("GET", path) in routes)}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item if method in METHODS
    }


def assert_matches(app: web.Application, doc: dict[str, Any]) -> None:
    have, described = routed(app), documented(doc)
    assert have - described == set(), f"routes missing from the document: {sorted(have - described)}"
    missing = described - have
    assert missing == set(), f"documented but not routed: {sorted(missing)}"


async def test_served_document_is_valid_openapi_31(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.base + "/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        doc = await response.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert doc == build_openapi(server.loaded.config)


async def test_every_route_documented_and_every_documented_route_served(server: RunningServer) -> None:
    assert_matches(server.app, build_openapi(server.loaded.config))


@pytest.mark.parametrize(
    "flags,compliance",
    [
        ({"demo_page": True, "dev_token_endpoint": True}, False),
        ({"demo_page": False, "dev_token_endpoint": True}, False),
        ({"demo_page": True, "dev_token_endpoint": False}, False),
        # Whether compliance is on must not change which documented routes exist.
        ({"demo_page": False, "dev_token_endpoint": False}, True),
    ],
)
def test_optional_routes_documented_exactly_when_enabled(
    tmp_path: Path, flags: dict[str, bool], compliance: bool
) -> None:
    loaded = make_loaded(
        tmp_path, archive={"enabled": False}, compliance={"enabled": compliance}, server=flags
    )
    app = build_app(loaded, extension_factories=())
    doc = build_openapi(loaded.config)
    validate(doc)
    assert_matches(app, doc)
    assert ("/dev/token" in doc["paths"]) is flags["dev_token_endpoint"]
    assert ("/" in doc["paths"]) is flags["demo_page"]


def test_every_operation_documents_its_errors_and_security() -> None:
    doc = build_openapi(make_loaded(Path("/nonexistent")).config)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            assert op.get("operationId"), f"{method} {path} has no operationId"
            assert "security" in op, f"{method} {path} does not state its security"
            if op["security"]:
                assert "401" in op["responses"], f"{method} {path} is authenticated but lists no 401"
            for status, response in op["responses"].items():
                # /readyz 503 is its documented readiness body, not an error.
                if int(status) >= 400 and (method, path) != ("get", "/readyz"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_policy_schema_follows_the_validating_model() -> None:
    from finrtc.config import RoomPolicy

    doc = build_openapi(make_loaded(Path("/nonexistent")).config)
    schema = doc["components"]["schemas"]["RoomPolicy"]
    assert set(schema["properties"]) == set(RoomPolicy.model_fields)
    assert schema["additionalProperties"] is False
