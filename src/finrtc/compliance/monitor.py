"""One room's script compliance: audio taps -> recognizer workers -> stage tracker -> events.

Threading: audio taps run on hook worker threads and only hand PCM to the recognizer pool
(never blocking). Results come back on the pool's reader thread and are moved onto the event
loop with `call_soon_threadsafe`; all tracker state lives on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from finrtc.compliance.matcher import PhraseMatcher
from finrtc.compliance.metrics import SESSIONS, STAGES
from finrtc.compliance.recognizer import RecognitionResult
from finrtc.compliance.report import render_html
from finrtc.compliance.script import Script
from finrtc.compliance.tap import tap_provider
from finrtc.compliance.tracker import AGENT_AUDIENCE, Emitted, Speaker, StageTracker
from finrtc.compliance.workers import RecognizerPool, StreamHandle
from finrtc.errors import ConflictError, ForbiddenError
from finrtc.model import Role, Severity, TrackInfo

log = logging.getLogger(__name__)

# publish(event_type, data, severity, audience): the lead binds it to EventLog.publish.
Publish = Callable[[str, dict[str, Any], Severity, "set[Role] | frozenset[Role] | None"], object]

DROP_ALERT_INTERVAL_S = 5.0
_OUTCOMES = {
    "compliance.stage_completed": "completed",
    "compliance.stage_missed": "missed",
}


class _TrackFeed:
    """The tap's target for one track: forwards PCM to the pool, failures to the session."""

    def __init__(self, session: ComplianceMonitor, track: TrackInfo, handle: StreamHandle) -> None:
        self.session = session
        self.track = track
        self.handle = handle
        self.closed = False

    def feed(self, pcm: bytes, media_time: float) -> bool:
        return self.handle.feed(pcm, media_time)

    def set_demand(self, demanded: bool) -> None:
        # A closed handle ignores it.
        self.handle.set_demand(demanded)

    def tap_failed(self, reason: str, media_time: float) -> None:
        self.session._threadsafe(self.session._feed_problem, self.track, "tap_failed", reason)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.handle.close()


class ComplianceMonitor:
    """Tracks one room's script. Create on the event loop, `start()`, then `await close()`."""

    def __init__(
        self,
        room: str,
        script: Script,
        pool: RecognizerPool,
        publish: Publish,
        *,
        require_consent: bool = False,
        matcher: PhraseMatcher | None = None,
        tick_interval: float = 1.0,
        recognizer_slowdown: float = 0.0,
    ) -> None:
        self.room = room
        self.script = script
        self.pool = pool
        self._publish = publish
        self.tracker = StageTracker(script, matcher, require_consent=require_consent)
        self._tick_interval = tick_interval
        self._slowdown = recognizer_slowdown
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._started_wall: float | None = None
        self._ended_wall: float | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._feeds: list[_TrackFeed] = []
        # Other checks `can_submit` waits for (identity: liveness, face match), by name.
        self._requirements: dict[str, Callable[[], bool]] = {}
        self._dropped_s: dict[str, float] = {}
        self._last_drop_alert: dict[str, float] = {}
        self._problems: list[dict[str, Any]] = []
        self._closed = False
        self.final_report: dict[str, Any] | None = None
        self.tap_provider = tap_provider(self._open_feed)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the session clock (deadlines count from here) and the deadline ticker."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._started_wall = time.time()
        SESSIONS.inc()
        self._emit(
            [Emitted("compliance.started", {
                "script": self.script.name, "title": self.script.title,
                "language": self.script.language,
                "require_consent": self.tracker.require_consent,
                "engine": self.pool.model.engine, "model_digest": self.pool.model.digest,
            })]
        )
        self._emit(self.tracker.start(self.now()))
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"compliance-ticker:{self.room}")

    async def close(self, flush_timeout: float = 10.0) -> dict[str, Any]:
        """End of call: flush every stream, wait for its last results, seal the final report."""
        if self._closed:
            return self.final_report or self.report()
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        loop = asyncio.get_running_loop()
        for feed in self._feeds:
            feed.close()
        deadline = loop.time() + flush_timeout
        for feed in self._feeds:
            remaining = max(0.0, deadline - loop.time())
            done = await loop.run_in_executor(None, feed.handle.wait_closed, remaining)
            if not done:
                self._feed_problem(feed.track, "flush_timeout", "the recognizer did not finish "
                                   f"within {flush_timeout:.0f} s; late speech may be missing")
        # Results queued by the reader thread before the close confirmation run first.
        await asyncio.sleep(0)
        now = self.now()
        self._emit(self.tracker.finish(now))
        self._ended_wall = time.time()
        if self._loop is not None:
            SESSIONS.dec()
        report = self.report()
        self.final_report = report
        self._emit([Emitted("compliance.report", report, Severity.INFO, AGENT_AUDIENCE)])
        return report

    def now(self) -> float:
        if self._loop is None:
            return 0.0
        return self._loop.time() - self._t0

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            self._emit(self.tracker.tick(self.now()))

    # --- inputs --------------------------------------------------------------------------------

    def observe(self, track: TrackInfo, result: RecognitionResult) -> None:
        """One recognized utterance from `track` (event loop only)."""
        if self.tracker.finished:
            return
        speaker = Speaker(track.participant, track.role, track.track_id)
        self._emit(self.tracker.observe(speaker, result, self.now()))

    def record_consent(self, participant: str, role: Role, granted: bool = True) -> dict[str, Any]:
        """Explicit UI consent (or its withdrawal) by the customer."""
        if role is not Role.CUSTOMER:
            raise ForbiddenError("only the customer can give or withdraw consent")
        if self.tracker.finished:
            raise ConflictError("the call has ended; consent can no longer change")
        self._emit(self.tracker.record_consent(granted, participant, "ui", self.now()))
        return {"consent_given": self.tracker.consent_given, "can_submit": self.can_submit}

    def add_requirement(self, name: str, satisfied: Callable[[], bool]) -> None:
        """Another check the call must pass before it can be submitted (read on each query)."""
        self._requirements[name] = satisfied

    def requirements(self) -> dict[str, bool]:
        return {name: check() for name, check in self._requirements.items()}

    @property
    def can_submit(self) -> bool:
        return self.tracker.can_submit and all(self.requirements().values())

    def transcript_demand(self) -> dict[str, bool]:
        """track id -> whether every utterance of that track is being transcribed."""
        return {feed.track.track_id: feed.handle.demanded for feed in self._feeds}

    # --- report --------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        tracker = self.tracker
        dropped = round(sum(self._dropped_s.values()), 3)
        return {
            "room": self.room,
            "status": "final" if tracker.finished else "live",
            "script": {
                "name": self.script.name, "title": self.script.title,
                "language": self.script.language,
            },
            "started_at": self._started_wall,
            "ended_at": self._ended_wall,
            "duration_s": round(self.now(), 3) if not tracker.finished else (
                round((self._ended_wall or 0) - (self._started_wall or 0), 3)
            ),
            "can_submit": self.can_submit,
            "requirements": self.requirements(),
            "next_required": (
                next_stage.spec.id if (next_stage := tracker.next_required()) else None
            ),
            "consent": {
                "required": tracker.require_consent,
                "given": tracker.consent_given,
                "events": list(tracker.consent_log),
            },
            "stages": tracker.stage_states(),
            "recognizer": {
                "engine": self.pool.model.engine,
                "model_digest": self.pool.model.digest,
                "model": self.pool.model.source,
                "language": self.pool.model.language,
            },
            "audio": {
                "dropped_seconds": dropped,
                "problems": list(self._problems[-50:]),
            },
            # False when audio was lost before recognition: missed stages may have been said.
            "verifiable": dropped == 0 and not self._problems,
            "generated_at": time.time(),
        }

    def report_html(self) -> str:
        return render_html(self.report())

    # --- plumbing ------------------------------------------------------------------------------

    def _open_feed(self, track: TrackInfo) -> _TrackFeed | None:
        """Called by the chain (any thread) for each new audio track of the room."""
        if self._closed or track.role not in (Role.AGENT, Role.CUSTOMER):
            return None
        phrases = self.script.phrases_for(track.role)
        if not phrases:
            return None

        def on_result(result: RecognitionResult) -> None:
            self._threadsafe(self.observe, track, result)

        def on_drop(seconds: float) -> None:
            self._threadsafe(self._audio_dropped, track, seconds)

        def on_failure(reason: str) -> None:
            self._threadsafe(self._feed_problem, track, "recognizer_failed", reason)

        handle = self.pool.open_stream(
            f"{self.room}/{track.track_id}", phrases, on_result,
            on_drop=on_drop, on_failure=on_failure, slowdown=self._slowdown,
        )
        feed = _TrackFeed(self, track, handle)
        self._feeds.append(feed)
        self._threadsafe(self._update_demand)
        return feed

    def _threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            callback(*args)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

    def _audio_dropped(self, track: TrackInfo, seconds: float) -> None:
        key = track.track_id
        self._dropped_s[key] = self._dropped_s.get(key, 0.0) + seconds
        now = self.now()
        if now - self._last_drop_alert.get(key, -1e9) < DROP_ALERT_INTERVAL_S:
            return
        self._last_drop_alert[key] = now
        self._emit([Emitted(
            "compliance.recognizer_backlog",
            {"track_id": key, "participant": track.participant, "role": track.role.value,
             "dropped_seconds": round(self._dropped_s[key], 3), "at_s": round(now, 3),
             "detail": "speech recognition fell behind; audio was skipped so media is not "
                       "delayed, and stages spoken meanwhile may be missed"},
            Severity.ALERT,
        )])

    def _feed_problem(self, track: TrackInfo, kind: str, reason: str) -> None:
        problem = {"track_id": track.track_id, "participant": track.participant,
                   "kind": kind, "reason": reason, "at_s": round(self.now(), 3)}
        self._problems.append(problem)
        self._emit([Emitted("compliance.feed_lost", problem, Severity.ALERT)])

    def _update_demand(self) -> None:
        """Transcribe (on demand) the speech of whoever owes the next required stage."""
        role = self.tracker.awaited_role()
        for feed in self._feeds:
            feed.set_demand(feed.track.role.value == role)

    def _emit(self, events: list[Emitted]) -> None:
        if events:
            self._update_demand()
        for event in events:
            outcome = _OUTCOMES.get(event.type)
            if event.type == "compliance.stage_rejected":
                outcome = f"rejected_{event.data.get('reason')}"
            if outcome is not None:
                STAGES.labels(outcome=outcome).inc()
            try:
                self._publish(
                    event.type, {"room": self.room, **event.data}, event.severity,
                    set(event.audience) if event.audience is not None else None,
                )
            except Exception:
                log.exception("publishing %s for room %s failed", event.type, self.room)
