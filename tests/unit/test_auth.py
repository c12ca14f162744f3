from __future__ import annotations

import time

import pytest

from finrtc.auth import authorize_room, bearer_token, mint_token, verify_token
from finrtc.errors import AuthError, BadRequestError, ForbiddenError
from finrtc.model import Role

SECRET = "k" * 48


def test_round_trip_carries_every_claim() -> None:
    grant = verify_token(mint_token(SECRET, room="r", identity="alice", role=Role.CUSTOMER, ttl_s=60), SECRET)
    assert (grant.identity, grant.room, grant.role) == ("alice", "r", Role.CUSTOMER)
    assert grant.can_publish and grant.can_subscribe and not grant.admin
    assert grant.expires_at == pytest.approx(time.time() + 60, abs=2)


def test_observers_do_not_publish_by_default() -> None:
    grant = verify_token(mint_token(SECRET, room="r", identity="o", role=Role.OBSERVER), SECRET)
    with pytest.raises(ForbiddenError, match="may not publish"):
        authorize_room(grant, "r", publish=True)
    authorize_room(grant, "r", subscribe=True)


def test_wrong_room_and_admin_scope() -> None:
    grant = verify_token(mint_token(SECRET, room="r", identity="a", role=Role.AGENT), SECRET)
    with pytest.raises(ForbiddenError, match="not 'other'"):
        authorize_room(grant, "other")
    admin = verify_token(
        mint_token(SECRET, room=None, identity="ops", role=Role.OBSERVER, admin=True), SECRET
    )
    authorize_room(admin, "any-room")


def test_not_yet_valid_and_expired() -> None:
    future = mint_token(SECRET, room="r", identity="a", role=Role.AGENT, not_before=time.time() + 600)
    with pytest.raises(AuthError, match="not valid yet"):
        verify_token(future, SECRET)
    with pytest.raises(AuthError, match="signature"):
        verify_token(mint_token(SECRET, room="r", identity="a", role=Role.AGENT), "z" * 48)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer"])
def test_bearer_header_forms(header: str | None) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "-lead", "ünï"])
def test_identities_are_checked(name: str) -> None:
    with pytest.raises(BadRequestError):
        mint_token(SECRET, room="r", identity=name, role=Role.AGENT)


@pytest.mark.parametrize(
    "token", ["\udc84.a.b", "ü.ü.ü", mint_token(SECRET, room="r", identity="a", role=Role.AGENT) + "é"]
)
def test_a_token_that_is_not_ascii_is_malformed_not_a_crash(token: str) -> None:
    # aiohttp hands a header's non-UTF-8 bytes over as surrogate escapes (found by schemathesis).
    with pytest.raises(AuthError, match="malformed"):
        verify_token(token, SECRET)
