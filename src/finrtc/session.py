"""A call session: one recording span of a room, from its first publisher to its last.

The session owns the clock every track's pts is measured on (0 = session start) and the
services that live exactly as long as the recording: the archive recorder, script compliance.
Those plug in as `SessionExtension`s so the room does not depend on them.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from finrtc.events import RoomEvent
from finrtc.hooks.chain import HookProvider
from finrtc.media.pipeline import TrackPipeline

if TYPE_CHECKING:
    from finrtc.room import Room

log = logging.getLogger(__name__)


class SessionExtension(Protocol):
    """A service bound to one call session (archive recorder, compliance tracker)."""

    name: str

    def hook_providers(self) -> Sequence[HookProvider]:
        """Per-track hooks this service needs (run after the YAML hooks of the same stage)."""
        ...

    def on_track(self, pipeline: TrackPipeline) -> None:
        """A track was published in this session (attach packet / end listeners)."""
        ...

    def on_event(self, event: RoomEvent) -> None:
        """Every room event while the session is live, in order, on the event loop."""
        ...

    async def close(self, clean: bool) -> None:
        """The session ended; clean=False after a crash-like end (shutdown timeout, failure)."""
        ...


ExtensionFactory = Callable[["Room", "CallSession"], Awaitable[SessionExtension | None]]


def new_session_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


class CallSession:
    def __init__(self, room: str) -> None:
        self.room = room
        self.session_id = new_session_id()
        self.started_wall = time.time()
        self._epoch = time.monotonic()
        self.extensions: list[SessionExtension] = []
        self.closed = False
        self._closed: set[SessionExtension] = set()

    def clock(self) -> float:
        """Seconds since the session started: the media time every pts is measured on."""
        return time.monotonic() - self._epoch

    def hook_providers(self) -> list[HookProvider]:
        return [provider for extension in self.extensions for provider in extension.hook_providers()]

    def on_track(self, pipeline: TrackPipeline) -> None:
        for extension in self.extensions:
            extension.on_track(pipeline)

    def on_event(self, event: RoomEvent) -> None:
        for extension in self.extensions:
            if extension in self._closed:
                continue
            try:
                extension.on_event(event)
            except Exception:
                log.exception(
                    "session %s: %s failed to take event %s", self.session_id, extension.name, event.type
                )

    async def close(self, clean: bool) -> None:
        """Close services in order; one still open keeps receiving the events the others emit
        while closing (the archive, last, seals the final compliance report)."""
        if self.closed:
            return
        self.closed = True
        for extension in self.extensions:
            try:
                await extension.close(clean)
            except Exception:
                log.exception("session %s: %s failed to close", self.session_id, extension.name)
            self._closed.add(extension)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.session_id,
            "started": self.started_wall,
            "media_time": round(self.clock(), 3),
            "services": [extension.name for extension in self.extensions],
        }
