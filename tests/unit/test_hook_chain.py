from __future__ import annotations

import numpy as np
import pytest
from pydantic import BaseModel

from finrtc import metrics
from finrtc.config import HookSpec
from finrtc.errors import ConfigError
from finrtc.hooks.chain import HookChain, HookFactory
from finrtc.hooks.contract import FailurePolicy, Hook, HookEvent, NoOptions, Stage, VideoFrame
from finrtc.hooks.loader import load_hooks, resolve_hook_class
from finrtc.model import MediaKind, Role, Severity, TrackInfo

TRACK = TrackInfo("room", "session", "alice", Role.AGENT, "t1", MediaKind.VIDEO)
ORDER: list[str] = []


def frame() -> VideoFrame:
    return VideoFrame(
        np.zeros((48, 64), np.uint8),
        np.zeros((24, 32), np.uint8),
        np.zeros((24, 32), np.uint8),
        64,
        48,
        1.5,
        0.0,
        0,
    )


def make_hook(
    name: str,
    stage: Stage,
    policy: FailurePolicy = FailurePolicy.FAIL_OPEN,
    fail: bool = False,
    write: bool = False,
) -> type[Hook]:
    class TestHook(Hook):
        kinds = frozenset({MediaKind.VIDEO})
        failure_policy = policy

        def process_video(self, item: VideoFrame) -> None:
            ORDER.append(name)
            if write:
                item.y[0, 0] = 255
            if fail:
                raise RuntimeError(f"{name} broke")

    TestHook.name = name
    TestHook.stage = stage
    return TestHook


def factory(hook_class: type[Hook], position: int = 0) -> HookFactory:
    return HookFactory(hook_class, NoOptions(), position)


def test_mutators_run_before_observers_in_yaml_order() -> None:
    ORDER.clear()
    hooks = [
        make_hook("obs1", Stage.OBSERVE),
        make_hook("mut1", Stage.MUTATE),
        make_hook("obs2", Stage.OBSERVE),
        make_hook("mut2", Stage.MUTATE),
    ]
    chain = HookChain(TRACK, [factory(h, i) for i, h in enumerate(hooks)], lambda e: None)
    chain.run_video(frame())
    assert ORDER == ["mut1", "mut2", "obs1", "obs2"]


def test_observers_get_read_only_views() -> None:
    events: list[HookEvent] = []
    chain = HookChain(TRACK, [factory(make_hook("sneaky", Stage.OBSERVE, write=True))], events.append)
    item = frame()
    chain.run_video(item)
    assert item.y[0, 0] == 0
    assert events and events[0].type == "hook_failed"


def test_fail_open_keeps_media_going_and_counts() -> None:
    before = (
        metrics.REGISTRY.get_sample_value(
            "finrtc_hook_failures_total", {"hook": "flaky", "policy": "fail_open"}
        )
        or 0
    )
    events: list[HookEvent] = []
    compromised: list[str] = []
    chain = HookChain(
        TRACK, [factory(make_hook("flaky", Stage.MUTATE, fail=True))], events.append, compromised.append
    )
    for _ in range(3):
        chain.run_video(frame())
    after = metrics.REGISTRY.get_sample_value(
        "finrtc_hook_failures_total", {"hook": "flaky", "policy": "fail_open"}
    )
    assert after == before + 3
    assert not compromised and chain.compromised_reason is None
    assert events[0].severity is Severity.WARNING and len(events) == 1  # rate-limited


def test_fail_closed_compromises_the_recording_once() -> None:
    ORDER.clear()
    events: list[HookEvent] = []
    compromised: list[str] = []
    chain = HookChain(
        TRACK,
        [factory(make_hook("seal", Stage.MUTATE, FailurePolicy.FAIL_CLOSED, fail=True))],
        events.append,
        compromised.append,
    )
    chain.run_video(frame())
    chain.run_video(frame())
    assert ORDER == ["seal"]  # disabled after its failure
    assert len(compromised) == 1 and "seal" in compromised[0]
    assert events[0].severity is Severity.ALERT and events[0].data["policy"] == "fail_closed"


def test_hooks_only_bind_to_their_kinds() -> None:
    audio_track = TrackInfo("room", "s", "a", Role.AGENT, "t2", MediaKind.AUDIO)
    chain = HookChain(audio_track, [factory(make_hook("video-only", Stage.MUTATE))], lambda e: None)
    assert chain.empty


class Opts(BaseModel):
    model_config = {"extra": "forbid", "strict": True}
    level: int = 1


class GoodHook(Hook):
    name = "good"
    kinds = frozenset({MediaKind.AUDIO})
    stage = Stage.OBSERVE
    options_model = Opts


class FutureHook(GoodHook):
    name = "future"
    api_version = 99


class Undeclared(Hook):
    pass


def test_loader_resolves_builtins_and_import_paths() -> None:
    assert resolve_hook_class("visible_watermark").name == "visible_watermark"
    assert resolve_hook_class(f"{__name__}:GoodHook") is GoodHook
    assert resolve_hook_class(f"{__name__}.GoodHook") is GoodHook


@pytest.mark.parametrize(
    ("use", "fragment"),
    [
        ("nonsense", "unknown hook"),
        ("no_such_module:Hook", "cannot import"),
        (f"{__name__}:Opts", "not a finrtc Hook"),
        (f"{__name__}:FutureHook", "API v99"),
        (f"{__name__}:Undeclared", "must declare"),
    ],
)
def test_loader_errors_name_the_hook(use: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as error:
        load_hooks([HookSpec(use=use)])
    assert "hooks[0]" in str(error.value)


def test_loader_validates_options_with_key_path() -> None:
    with pytest.raises(ConfigError, match=r"hooks\[1\].options.level"):
        load_hooks(
            [HookSpec(use="visible_watermark"), HookSpec(use=f"{__name__}:GoodHook", options={"level": "x"})]
        )
    factories = load_hooks(
        [
            HookSpec(use=f"{__name__}:GoodHook", options={"level": 3}),
            HookSpec(use="visible_watermark", enabled=False),
        ]
    )
    assert [f.name for f in factories] == ["good"]
    assert factories[0].options.level == 3  # type: ignore[attr-defined]


class BrokenAtStart(Hook):
    name = "broken_at_start"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.OBSERVE
    failure_policy = FailurePolicy.FAIL_CLOSED

    def __init__(self, options: BaseModel, context: object) -> None:
        raise RuntimeError("model file missing")


def test_a_hook_that_cannot_start_applies_its_failure_policy() -> None:
    events: list[HookEvent] = []
    compromised: list[str] = []
    chain = HookChain(
        TRACK,
        [factory(BrokenAtStart), factory(make_hook("ok", Stage.MUTATE), 1)],
        events.append,
        compromised.append,
    )
    assert chain.hook_names == ["ok"]
    assert compromised and "model file missing" in compromised[0]
    assert events[0].type == "hook_failed" and events[0].hook == "broken_at_start"


def test_a_hook_refuses_options_of_the_wrong_model() -> None:
    from finrtc.errors import HookError
    from finrtc.hooks.builtin.visible_watermark import VisibleWatermark
    from finrtc.hooks.contract import HookContext

    with pytest.raises(HookError, match="expects VisibleWatermarkOptions"):
        VisibleWatermark(NoOptions(), HookContext(TRACK, "visible_watermark", lambda e: None))
