"""The hook chain of one published track: mutators, then observers, then post-encode hooks.

The chain is built once per track from the frozen, validated hook specs and is only ever called
from that track's worker (one call at a time), so hooks need no locking.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import BaseModel

from finrtc import metrics
from finrtc.hooks.contract import (
    AudioChunk,
    EventEmitter,
    FailurePolicy,
    Hook,
    HookContext,
    Stage,
    VideoFrame,
)
from finrtc.model import EncodedPacket, MediaKind, Severity, TrackInfo

log = logging.getLogger(__name__)
Item = TypeVar("Item", VideoFrame, AudioChunk, EncodedPacket)

# A fail-open hook that keeps failing is logged at most this often.
FAILURE_LOG_INTERVAL_S = 10.0


class HookProvider(Protocol):
    """Anything that makes one hook instance per matching track (YAML hooks, room services)."""

    @property
    def name(self) -> str: ...

    def handles(self, kind: MediaKind) -> bool: ...

    def create(self, track: TrackInfo, emit: EventEmitter) -> Hook: ...


@dataclass(frozen=True)
class HookFactory:
    """A loaded hook class with its validated options; makes one instance per track."""

    hook_class: type[Hook]
    options: BaseModel
    position: int

    @property
    def name(self) -> str:
        return self.hook_class.name

    def handles(self, kind: MediaKind) -> bool:
        return kind in self.hook_class.kinds

    def create(self, track: TrackInfo, emit: EventEmitter) -> Hook:
        return self.hook_class(self.options, HookContext(track, self.name, emit))


class _Slot:
    """One hook instance with its bookkeeping and pre-bound metric children."""

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        self.name = hook.name
        self.policy = hook.failure_policy
        self.budget_s = hook.budget_ms / 1000.0
        self.disabled = False
        self.failures = 0
        self.last_failure_log = 0.0
        self.timer = metrics.HOOK_SECONDS.labels(hook=self.name, stage=hook.stage.value)
        self.overruns = metrics.HOOK_BUDGET_OVERRUNS.labels(hook=self.name)
        self.failure_counter = metrics.HOOK_FAILURES.labels(hook=self.name, policy=self.policy.value)


class _FailedHook(Hook):
    """Stands in for a hook whose constructor raised, so its failure is reported like any other."""

    kinds = frozenset(MediaKind)
    stage = Stage.MUTATE

    def __init__(self, name: str, policy: FailurePolicy) -> None:
        self.name = name  # type: ignore[misc]
        self.failure_policy = policy  # type: ignore[misc]


CompromiseCallback = Callable[[str], None]


class HookChain:
    """Runs a track's hooks in order, times them, and applies each hook's failure policy."""

    def __init__(
        self,
        track: TrackInfo,
        factories: Sequence[HookProvider],
        emit: EventEmitter,
        on_compromised: CompromiseCallback | None = None,
    ) -> None:
        self.track = track
        self._emit = emit
        self._on_compromised = on_compromised
        self.compromised_reason: str | None = None
        mine = [factory for factory in factories if factory.handles(track.kind)]
        instances = [slot for factory in mine if (slot := self._create(factory)) is not None]
        # YAML order within each stage; stages in data-flow order.
        self._mutators = [slot for slot in instances if slot.hook.stage is Stage.MUTATE]
        self._observers = [slot for slot in instances if slot.hook.stage is Stage.OBSERVE]
        self._post_encode = [slot for slot in instances if slot.hook.stage is Stage.POST_ENCODE]
        self._needs_read_only = bool(self._observers)

    def _create(self, factory: HookProvider) -> _Slot | None:
        """A hook that cannot even start for this track is a failure like any other."""
        try:
            return _Slot(factory.create(self.track, self._emit))
        except Exception as error:
            policy = getattr(
                getattr(factory, "hook_class", None), "failure_policy", FailurePolicy.FAIL_CLOSED
            )
            placeholder = _FailedHook(factory.name, policy)
            slot = _Slot(placeholder)
            self._failed(slot, error, 0.0)
            return None

    @property
    def hook_names(self) -> list[str]:
        return [slot.name for slot in (*self._mutators, *self._observers, *self._post_encode)]

    @property
    def empty(self) -> bool:
        return not (self._mutators or self._observers or self._post_encode)

    @property
    def has_post_encode_hooks(self) -> bool:
        return bool(self._post_encode)

    @property
    def has_mutators(self) -> bool:
        return bool(self._mutators)

    @property
    def has_frame_hooks(self) -> bool:
        return bool(self._mutators or self._observers)

    def run_video(self, frame: VideoFrame) -> None:
        for slot in self._mutators:
            self._call(slot, slot.hook.process_video, frame, frame.media_time)
        if self._needs_read_only:
            view = frame.read_only()
            for slot in self._observers:
                self._call(slot, slot.hook.process_video, view, frame.media_time)

    def run_audio(self, chunk: AudioChunk) -> None:
        for slot in self._mutators:
            self._call(slot, slot.hook.process_audio, chunk, chunk.media_time)
        if self._needs_read_only:
            view = chunk.read_only()
            for slot in self._observers:
                self._call(slot, slot.hook.process_audio, view, chunk.media_time)

    def run_packet(self, packet: EncodedPacket) -> None:
        for slot in self._post_encode:
            self._call(slot, slot.hook.process_packet, packet, packet.media_time)

    def close(self) -> None:
        for slot in (*self._mutators, *self._observers, *self._post_encode):
            try:
                slot.hook.close()
            except Exception:
                log.exception("hook %s failed to close", slot.name)

    def _call(self, slot: _Slot, method: Callable[[Item], None], item: Item, media_time: float) -> None:
        if slot.disabled:
            return
        started = time.perf_counter()
        try:
            method(item)
        except Exception as error:
            self._failed(slot, error, media_time)
            return
        finally:
            elapsed = time.perf_counter() - started
            slot.timer.observe(elapsed)
            if elapsed > slot.budget_s:
                slot.overruns.inc()

    def _failed(self, slot: _Slot, error: Exception, media_time: float) -> None:
        slot.failures += 1
        slot.failure_counter.inc()
        description = f"{type(error).__name__}: {error}"
        if slot.policy is FailurePolicy.FAIL_CLOSED:
            # A compliance hook that failed once cannot vouch for anything after: stop calling it
            # and mark the track's recording as compromised.
            slot.disabled = True
            log.error("compliance hook %s failed on %s: %s", slot.name, self.track.track_id, description)
            reason = f"compliance hook {slot.name} failed: {description}"
            self._emit_failure(slot, description, media_time, Severity.ALERT)
            if self.compromised_reason is None:
                self.compromised_reason = reason
                if self._on_compromised is not None:
                    self._on_compromised(reason)
            return
        now = time.monotonic()
        if slot.failures == 1 or now - slot.last_failure_log >= FAILURE_LOG_INTERVAL_S:
            slot.last_failure_log = now
            log.warning(
                "hook %s failed (%d times so far) on %s, media continues: %s",
                slot.name,
                slot.failures,
                self.track.track_id,
                description,
            )
            self._emit_failure(slot, description, media_time, Severity.WARNING)

    def _emit_failure(self, slot: _Slot, description: str, media_time: float, severity: Severity) -> None:
        context = HookContext(self.track, slot.name, self._emit)
        context.emit(
            "hook_failed",
            media_time,
            {"error": description, "policy": slot.policy.value, "failures": slot.failures},
            severity,
        )
