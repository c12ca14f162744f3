"""The server's typed room events: JSON field names, severities, audiences, and their docs."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from finrtc import room_events
from finrtc.events import EventLog
from finrtc.model import MediaKind, Role, Severity
from finrtc.room_events import STAFF, ServerEvent, TrackPublished, TrackStalled, TrackUnpublished

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def all_event_classes() -> list[type[ServerEvent]]:
    return [
        value
        for value in vars(room_events).values()
        if isinstance(value, type) and issubclass(value, ServerEvent) and value is not ServerEvent
    ]


def test_every_event_has_a_unique_type_and_names_tracks_track_id() -> None:
    classes = all_event_classes()
    types = [cls.event_type for cls in classes]
    assert len(types) == len(set(types)) and len(types) >= 13
    for cls in classes:
        names = {item.name for item in dataclasses.fields(cls)}
        assert "track" not in names, f"{cls.__name__} must name its track track_id"


def test_to_data_is_plain_json() -> None:
    event = TrackPublished(
        participant="agent-1", role=Role.AGENT, track_id="t1", kind=MediaKind.VIDEO, codec="video/VP8",
        hooks=("visible_watermark",),
    )
    assert event.to_data() == {
        "participant": "agent-1", "role": "agent", "track_id": "t1", "kind": "video",
        "codec": "video/VP8", "hooks": ["visible_watermark"],
    }


def test_a_misspelt_field_is_an_error() -> None:
    with pytest.raises(TypeError):
        TrackStalled(participant="p", track="t1", kind=MediaKind.AUDIO, since_media_time=1.0)  # type: ignore[call-arg]


async def test_emit_carries_severity_and_audience() -> None:
    log = EventLog("r1")
    log.bind_loop(asyncio.get_running_loop())
    lost = log.emit(
        TrackUnpublished(participant="c", role=Role.CUSTOMER, track_id="a1", kind=MediaKind.AUDIO,
                         reason="media lost", clean=False)
    )
    assert lost.severity is Severity.WARNING and lost.audience is None
    assert lost.data["track_id"] == "a1"
    stalled = log.emit(
        TrackStalled(participant="c", track_id="v1", kind=MediaKind.VIDEO, since_media_time=2.5)
    )
    assert stalled.audience == STAFF and stalled.severity is Severity.WARNING
    assert [event.type for event in log.history(Role.CUSTOMER)] == ["track_unpublished"]
    log.emit_threadsafe(
        TrackStalled(participant="c", track_id="v2", kind=MediaKind.VIDEO, since_media_time=3)
    )
    await asyncio.sleep(0)
    assert log.history()[-1].data["track_id"] == "v2"


def test_the_docs_table_lists_every_event_with_its_fields() -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("<!-- server-events -->", 1)[1].split("<!-- /server-events -->", 1)[0]
    documented = {}
    for line in block.splitlines():
        match = re.match(r"\| `([a-z_]+)` \| (.*?) \| (everyone|staff) \|", line)
        if match:
            documented[match.group(1)] = (re.findall(r"`([a-z_]+)`", match.group(2)), match.group(3))
    expected = {
        cls.event_type: (
            [item.name for item in dataclasses.fields(cls)],
            "staff" if cls.audience else "everyone",
        )
        for cls in all_event_classes()
    }
    assert documented == expected
