"""The identity routes exist exactly when identity checks are enabled, and are documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_spec_validator import validate

from finrtc.assembly import build_app
from finrtc.signaling.openapi import build_openapi
from tests.api.test_api_contract import assert_matches
from tests.conftest import make_loaded

pytest.importorskip("dlib")


@pytest.mark.parametrize("enabled", [True, False])
def test_identity_routes_documented_exactly_when_enabled(tmp_path: Path, enabled: bool) -> None:
    loaded = make_loaded(
        tmp_path, archive={"enabled": False}, compliance={"enabled": False}, identity={"enabled": enabled}
    )
    app = build_app(loaded)
    doc = build_openapi(loaded.config)
    validate(doc)
    assert_matches(app, doc)
    assert ("/v1/rooms/{room}/identity/reference" in doc["paths"]) is enabled
    assert ("/v1/rooms/{room}/identity/voiceprint" in doc["paths"]) is enabled
    policy = doc["components"]["schemas"]["RoomPolicy"]["properties"]["identity"]
    checks = ["liveness", "face_match", "voice_match"]
    assert policy["properties"]["require"]["items"]["enum"] == checks
    assert doc["components"]["schemas"]["IdentityReport"]["properties"]["required"]["items"]["enum"] == checks
