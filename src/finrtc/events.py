"""A room's event stream: typed events, a bounded replay window, bounded subscriber queues.

Events come from the event loop (joins, leaves) and from hook worker threads (via
`publish_threadsafe`). Each event gets a per-room sequence number, which is also the resume
cursor a reconnecting client sends back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finrtc import metrics
from finrtc.model import Role, Severity
from finrtc.room_events import ServerEvent


@dataclass(frozen=True, slots=True)
class RoomEvent:
    seq: int
    type: str
    room: str
    data: Mapping[str, Any]
    severity: Severity = Severity.INFO
    wall_clock: float = field(default_factory=time.time)
    # Roles allowed to see the event; None means every role.
    audience: frozenset[Role] | None = None

    def visible_to(self, role: Role) -> bool:
        return self.audience is None or role in self.audience

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "room": self.room,
            "severity": self.severity.value,
            "time": self.wall_clock,
            "data": dict(self.data),
        }


Listener = Callable[[RoomEvent], None]


class Subscription:
    """One consumer's bounded queue. A consumer that falls behind is cut off, not waited for."""

    def __init__(self, role: Role, maxsize: int) -> None:
        self.role = role
        self.queue: asyncio.Queue[RoomEvent | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, event: RoomEvent) -> None:
        if self.overflowed or not event.visible_to(self.role):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The client can reconnect with its cursor and replay from the window.
            self.overflowed = True
            metrics.SINK_DROPS.labels(sink="event_subscriber").inc()

    def close(self) -> None:
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.overflowed = True


class EventLog:
    def __init__(self, room: str, window: int = 1000, subscriber_queue: int = 256) -> None:
        self.room = room
        self._window: deque[RoomEvent] = deque(maxlen=window)
        self._seq = itertools.count(1)
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self._subscriber_queue = subscriber_queue
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add_listener(self, listener: Listener) -> None:
        """Server-side consumers (webhooks, archive, compliance) see every event, in order."""
        self._listeners.append(listener)

    def publish(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        severity: Severity = Severity.INFO,
        audience: Iterable[Role] | None = None,
    ) -> RoomEvent:
        event = RoomEvent(
            seq=next(self._seq),
            type=event_type,
            room=self.room,
            data=dict(data or {}),
            severity=severity,
            audience=frozenset(audience) if audience is not None else None,
        )
        self._window.append(event)
        for listener in self._listeners:
            listener(event)
        for subscription in self._subscriptions:
            subscription.offer(event)
        return event

    def emit(self, event: ServerEvent) -> RoomEvent:
        """Publish one of the server's own typed events (see `finrtc.room_events`)."""
        return self.publish(
            event.event_type, event.to_data(), severity=event.severity(), audience=event.audience
        )

    def emit_threadsafe(self, event: ServerEvent) -> None:
        """`emit` from a thread other than the event loop's (hook workers, the pipeline)."""
        self.publish_threadsafe(
            event.event_type, event.to_data(), severity=event.severity(), audience=event.audience
        )

    def publish_threadsafe(
        self,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        severity: Severity = Severity.INFO,
        audience: Iterable[Role] | None = None,
    ) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        audience_set = frozenset(audience) if audience is not None else None
        loop.call_soon_threadsafe(
            lambda: self.publish(event_type, data, severity=severity, audience=audience_set)
        )

    def subscribe(self, role: Role, after: int | None = None) -> tuple[Subscription, bool]:
        """Start a subscription; replays events after cursor `after`.

        Returns the subscription and whether the replay is complete (False when the cursor is
        older than the window, so the client knows it missed events).
        """
        subscription = Subscription(role, self._subscriber_queue + len(self._window))
        complete = True
        if after is not None:
            oldest = self._window[0].seq if self._window else None
            if oldest is not None and after < oldest - 1:
                complete = False
            for event in self._window:
                if event.seq > after:
                    subscription.offer(event)
        self._subscriptions.add(subscription)
        return subscription, complete

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def history(self, role: Role | None = None) -> list[RoomEvent]:
        return [event for event in self._window if role is None or event.visible_to(role)]

    def close(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close()
        self._subscriptions.clear()
