"""Fixtures for the room API and WHIP/WHEP tests: a server with an API key and a CORS origin."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from finrtc.auth import mint_token
from finrtc.config import LoadedConfig
from finrtc.model import Role
from tests.conftest import TEST_SECRET, make_loaded

API_KEY = "backend-1"
API_KEY_SECRET = "api-key-secret-" + "k" * 32
ORIGIN = "https://branch.bank.example"


def api_config(tmp_path: Path, **server: Any) -> LoadedConfig:
    """No archive, compliance off (one script known), an API key, a CORS origin, `server` flags."""
    return make_loaded(
        tmp_path,
        archive={"enabled": False},
        compliance={"enabled": False, "scripts": {"mifid": "builtin:demo_insurance_en"}},
        auth={"api_keys": {API_KEY: API_KEY_SECRET}},
        server={"cors_allow_origins": [ORIGIN], **server},
    )


@pytest.fixture
def server_config(tmp_path: Path) -> LoadedConfig:
    return api_config(tmp_path)


def basic(key: str = API_KEY, secret: str = API_KEY_SECRET) -> dict[str, str]:
    encoded = base64.b64encode(f"{key}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def participant_token(room: str, identity: str, role: Role = Role.AGENT, **claims: Any) -> str:
    return mint_token(TEST_SECRET, room=room, identity=identity, role=role, **claims)


def admin_token(
    room: str | None = None, *, secret: str = TEST_SECRET, ttl_s: int = 600, not_before: float | None = None
) -> str:
    return mint_token(
        secret, room=room, identity="ops", role=Role.OBSERVER, admin=True, ttl_s=ttl_s, not_before=not_before
    )


def expired_admin_token() -> str:
    # Issued two hours ago with a one-hour life: expired well beyond the leeway.
    now = int(time.time())
    claims = {
        "iss": "finrtc",
        "sub": "ops",
        "role": "observer",
        "admin": True,
        "iat": now - 7200,
        "nbf": now - 7200,
        "exp": now - 3600,
    }
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")
