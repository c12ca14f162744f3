"""Structured JSON logs with room/participant context, and secrets that never reach them."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from finrtc.auth import mint_token
from finrtc.logging_setup import (
    REDACTED,
    bind_log_context,
    configure_logging,
    current_log_context,
    log_context,
    redact_text,
    reset_log_context,
)
from finrtc.model import Role

API_SECRET = "a" * 48


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    level, handlers, access_level = root.level, list(root.handlers), access.level
    yield
    for handler in list(root.handlers):
        # Only ours: pytest adds and removes its own capture handlers around each phase.
        if handler not in handlers and getattr(handler, "_finrtc_handler", False):
            root.removeHandler(handler)
    root.setLevel(level)
    access.setLevel(access_level)


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_context_and_extras(captured: io.StringIO) -> None:
    log = logging.getLogger("finrtc.test.room")
    log.info("before")
    with log_context(room="branch-42", participant="agent-7", role="agent"):
        log.info("joined %s", "ok", extra={"tracks": 2})
        with log_context(track="video-1", participant=None):
            log.warning("nested")
        log.debug("after nested")
    log.error("outside")

    before, joined, nested, after, outside = lines(captured)
    assert set(before) == {"time", "level", "logger", "message"}
    assert before["time"].endswith("Z") and "T" in before["time"]
    assert joined == {
        "time": joined["time"],
        "level": "info",
        "logger": "finrtc.test.room",
        "message": "joined ok",
        "room": "branch-42",
        "participant": "agent-7",
        "role": "agent",
        "tracks": 2,
    }
    assert nested["room"] == "branch-42" and nested["track"] == "video-1"
    assert "participant" not in nested and nested["level"] == "warning"
    assert after["participant"] == "agent-7" and "track" not in after
    assert "room" not in outside


def test_unknown_context_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log context field 'password'"), log_context(
        password="x"
    ):
        pass


async def test_context_follows_tasks_without_leaking_between_them(captured: io.StringIO) -> None:
    log = logging.getLogger("finrtc.test.tasks")

    async def session(room: str, participant: str) -> None:
        token = bind_log_context(room=room, participant=participant)
        try:
            await asyncio.sleep(0.01)
            await asyncio.create_task(child())
        finally:
            reset_log_context(token)

    async def child() -> None:
        await asyncio.sleep(0)
        log.info("from child of %s", current_log_context()["participant"])

    await asyncio.gather(session("room-a", "alice"), session("room-b", "bob"))
    records = [r for r in lines(captured) if r["logger"] == "finrtc.test.tasks"]
    assert {(r["room"], r["participant"]) for r in records} == {
        ("room-a", "alice"),
        ("room-b", "bob"),
    }
    assert all(r["message"].endswith(r["participant"]) for r in records)
    assert current_log_context() == {}


def test_worker_thread_gets_context_through_copy_context(captured: io.StringIO) -> None:
    log = logging.getLogger("finrtc.test.thread")
    with log_context(room="r1", track="audio-3"):
        snapshot = contextvars.copy_context()
    thread = threading.Thread(target=snapshot.run, args=(log.info, "hook worker tick"))
    thread.start()
    thread.join()
    (record,) = lines(captured)
    assert record["room"] == "r1" and record["track"] == "audio-3"


def test_secrets_and_tokens_are_redacted(captured: io.StringIO) -> None:
    log = logging.getLogger("finrtc.test.secrets")
    token = mint_token(API_SECRET, room="room-1", identity="cust-1", role=Role.CUSTOMER)
    log.info("GET /v1/rooms/room-1/events?access_token=%s&after=3 200", token)
    log.info("Authorization: Bearer %s", token)
    log.info("webhook", extra={"api_secret": API_SECRET, "headers": {"Authorization": "Basic x"}})
    log.info("signature t=1,v1=%s", "ab" * 32)
    try:
        raise RuntimeError(f"bad token {token}")
    except RuntimeError:
        log.exception("failed")
    output = captured.getvalue()
    assert token not in output
    assert API_SECRET not in output
    assert "ab" * 32 not in output
    records = lines(captured)
    assert records[0]["message"] == (
        f"GET /v1/rooms/room-1/events?access_token={REDACTED}&after=3 200"
    )
    assert records[1]["message"] == f"Authorization: Bearer {REDACTED}"
    assert records[2]["api_secret"] == REDACTED
    assert records[2]["headers"] == {"Authorization": REDACTED}
    assert "RuntimeError: bad token" in records[4]["exception"]


def test_redact_text_leaves_ordinary_text_alone() -> None:
    text = "room branch-42 participant agent-7 published video (640x480, vp8)"
    assert redact_text(text) == text
    assert redact_text("password=hunter2 ok") == f"password={REDACTED} ok"
    assert redact_text("api_secret=xyz ok") == f"api_secret={REDACTED} ok"
    assert redact_text("{'api_secret': 'xyz', 'port': 80}") == (
        f"{{'api_secret': '{REDACTED}', 'port': 80}}"
    )
    assert redact_text('{"token": "abc"}') == f'{{"token": "{REDACTED}"}}'
    assert redact_text("secret_file=/run/secrets/api") == "secret_file=/run/secrets/api"


def test_text_format_and_reconfiguration() -> None:
    root = logging.getLogger()
    first = io.StringIO()
    second = io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("warning", "text", stream=second)
    log = logging.getLogger("finrtc.test.text")
    with log_context(room="r9"):
        log.info("hidden")
        log.warning("shown token=abc123")
    assert first.getvalue() == ""
    line = second.getvalue().strip()
    assert line.endswith(f"WARNING finrtc.test.text: shown token={REDACTED} [room=r9]")
    assert len([h for h in root.handlers if getattr(h, "_finrtc_handler", False)]) == 1
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("verbose", "json")
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("info", "xml")


def test_a_real_process_writes_json_lines_to_stderr() -> None:
    program = (
        "import logging\n"
        "from finrtc.logging_setup import configure_logging, log_context\n"
        "configure_logging('info', 'json')\n"
        "with log_context(room='房间-1', session='s-1'):\n"
        "    logging.getLogger('finrtc.server').info('started')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    (record,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert record["room"] == "房间-1" and record["session"] == "s-1"
    assert record["logger"] == "finrtc.server" and record["message"] == "started"
