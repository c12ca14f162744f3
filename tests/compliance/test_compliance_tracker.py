"""Stage tracking rules on recognized text: order, deadlines, consent, prompts, can_submit."""

from __future__ import annotations

from finrtc.compliance.recognizer import KeywordHit, RecognitionResult
from finrtc.compliance.script import Script, load_script, parse_script
from finrtc.compliance.tracker import Emitted, Speaker, StageTracker
from finrtc.model import Role, Severity

AGENT = Speaker("alice", Role.AGENT, "t-a")
CUSTOMER = Speaker("bob", Role.CUSTOMER, "t-c")


def said(text: str, at: float = 1.0, keywords: tuple[KeywordHit, ...] = ()) -> RecognitionResult:
    return RecognitionResult("s", text, keywords, at, at + 1.0, 0.5, "pocketsphinx", "d" * 64)


def kinds(events: list[Emitted]) -> list[str]:
    return [event.type for event in events]


def demo() -> StageTracker:
    return StageTracker(load_script("builtin:demo_insurance_en"))


def status(tracker: StageTracker, stage_id: str) -> str:
    return next(state.status for state in tracker.stages if state.spec.id == stage_id)


AGENT_LINES = [
    "my name is alice and i am a licensed insurance agent",
    "this policy is issued by northwind life",
    "returns are not guaranteed",
    "the policy does not cover pre existing conditions",
]


def test_in_order_call_completes_and_prompts_next_item() -> None:
    tracker = demo()
    events = tracker.start(0.0)
    assert kinds(events) == ["compliance.stage_started", "compliance.prompt"]
    assert events[1].audience == frozenset({Role.AGENT, Role.OBSERVER})
    for index, line in enumerate(AGENT_LINES):
        events = tracker.observe(AGENT, said(line, at=10.0 * index), 10.0 * index)
        assert "compliance.stage_completed" in kinds(events)
    prompt = [e for e in events if e.type == "compliance.prompt"][-1]
    assert prompt.data["stage_id"] == "customer_confirmation"
    assert "confirm" in prompt.data["text"]
    assert not tracker.can_submit
    events = tracker.observe(CUSTOMER, said("yes i have understood and i agree", 50.0), 50.0)
    completed = next(e for e in events if e.type == "compliance.stage_completed")
    assert completed.data["stage"]["media_time"] == 50.0
    assert completed.data["stage"]["participant"] == "bob"
    assert completed.data["stage"]["matched_text"] == "i have understood and i agree"
    assert tracker.can_submit
    assert [e.data["text"] for e in events if e.type == "compliance.prompt"] == [
        "All required script items are covered."
    ]


def test_wrong_role_does_not_count() -> None:
    tracker = demo()
    tracker.start(0.0)
    tracker.observe(CUSTOMER, said(AGENT_LINES[0]), 1.0)
    assert status(tracker, "identity") == "active"
    tracker.observe(AGENT, said("i have understood and i agree"), 2.0)
    assert status(tracker, "customer_confirmation") == "pending"


def test_skipped_stage_is_missed_out_of_order_and_can_be_recovered_late() -> None:
    tracker = demo()
    tracker.start(0.0)
    for line in AGENT_LINES[:2]:
        tracker.observe(AGENT, said(line), 1.0)
    # The agent jumps to the exclusions: the risk notice was skipped.
    events = tracker.observe(AGENT, said(AGENT_LINES[3]), 5.0)
    missed = [e for e in events if e.type == "compliance.stage_missed"]
    assert [e.data["stage"]["id"] for e in missed] == ["risk_notice"]
    assert missed[0].data["reason"] == "out_of_order" and missed[0].severity is Severity.WARNING
    urgent = [e for e in events if e.type == "compliance.prompt" and e.data["urgent"]]
    assert urgent and urgent[0].data["stage_id"] == "risk_notice"
    # The customer cannot confirm while the risk notice is open.
    events = tracker.observe(CUSTOMER, said("i have understood and i agree"), 6.0)
    assert "compliance.stage_rejected" in kinds(events)
    assert status(tracker, "customer_confirmation") != "completed"
    assert not tracker.can_submit
    # The agent reads it after all, then the customer confirms.
    tracker.observe(AGENT, said(AGENT_LINES[2]), 7.0)
    risk = next(state for state in tracker.stages if state.spec.id == "risk_notice")
    assert risk.status == "completed" and risk.late and risk.missed_reason == "out_of_order"
    tracker.observe(CUSTOMER, said("i have understood and i agree"), 8.0)
    assert tracker.can_submit


def test_confirmation_before_exclusions_marks_them_missed() -> None:
    tracker = demo()
    tracker.start(0.0)
    for line in AGENT_LINES[:3]:
        tracker.observe(AGENT, said(line), 1.0)
    events = tracker.observe(CUSTOMER, said("i have understood and i agree"), 9.0)
    assert [e.data["stage"]["id"] for e in events if e.type == "compliance.stage_missed"] == [
        "exclusions"
    ]
    assert any(e.data.get("stage_id") == "exclusions" for e in events
               if e.type == "compliance.prompt")
    final = tracker.finish(20.0)
    assert [e.data["stage"]["id"] for e in final] == ["customer_confirmation"]
    assert final[0].data["reason"] == "call_ended"
    assert not tracker.can_submit


def test_deadline_passes() -> None:
    tracker = demo()  # identity: deadline_s 120
    tracker.start(0.0)
    assert tracker.tick(119.0) == []
    events = tracker.tick(121.0)
    assert kinds(events)[:2] == ["compliance.stage_missed", "compliance.prompt"]
    assert events[0].data["reason"] == "deadline"
    assert events[1].data["text"].startswith("Deadline passed")
    assert tracker.tick(122.0) == []  # missed once, not every tick


def test_negated_confirmation_is_rejected_even_with_a_keyword_hit() -> None:
    tracker = demo()
    tracker.start(0.0)
    for line in AGENT_LINES:
        tracker.observe(AGENT, said(line), 1.0)
    # Spotting found the phrase, but the transcript shows the customer said the opposite.
    hit = KeywordHit("i have understood and i agree", 3.0, 4.0, 0.9)
    events = tracker.observe(
        CUSTOMER, said("no i have not understood and i do not agree", 3.0, (hit,)), 3.0
    )
    rejected = [e for e in events if e.type == "compliance.stage_rejected"]
    assert rejected and rejected[0].data["reason"] == "negation"
    assert rejected[0].data["negation_cue"] in ("no", "not")
    assert status(tracker, "customer_confirmation") != "completed"
    # A keyword hit with a clean transcript completes it with the spotting confidence.
    events = tracker.observe(CUSTOMER, said("i have understood and i agree", 9.0, (hit,)), 9.0)
    stage = next(e for e in events if e.type == "compliance.stage_completed").data["stage"]
    assert stage["confidence"] == 0.9 and stage["confidence_source"] == "keyword"
    assert stage["media_time"] == 3.0  # the hit's own time


def consent_script() -> Script:
    return parse_script(
        {
            "name": "c", "title": "C", "language": "en",
            "stages": [
                {"id": "consent", "title": "Consent", "role": "customer", "kind": "consent",
                 "phrases": ["i agree to the recording"]},
                {"id": "risk", "title": "Risk", "role": "agent",
                 "phrases": ["returns are not guaranteed"]},
            ],
        },
        "test",
    )


def test_spoken_consent_gates_sale_stages() -> None:
    tracker = StageTracker(consent_script(), require_consent=True)
    events = tracker.start(0.0)
    assert events[0].data["stage_id"] == "consent"
    events = tracker.observe(AGENT, said("returns are not guaranteed"), 1.0)
    assert [e.data["reason"] for e in events if e.type == "compliance.stage_rejected"] == [
        "consent_pending"
    ]
    assert status(tracker, "risk") != "completed"
    events = tracker.observe(CUSTOMER, said("i do not agree to the recording"), 2.0)
    assert not tracker.consent_given
    events = tracker.observe(CUSTOMER, said("yes i agree to the recording"), 3.0)
    consent = [e for e in events if e.type == "compliance.consent"]
    assert consent and consent[0].data["source"] == "spoken" and consent[0].data["granted"]
    tracker.observe(AGENT, said("returns are not guaranteed"), 4.0)
    assert tracker.can_submit


def test_ui_consent_and_withdrawal() -> None:
    script = load_script("builtin:demo_insurance_en")
    tracker = StageTracker(script, require_consent=True)
    events = tracker.start(0.0)
    assert "consent" in events[-1].data["text"]
    tracker.observe(AGENT, said(AGENT_LINES[0]), 1.0)
    assert status(tracker, "identity") != "completed"
    events = tracker.record_consent(True, "bob", "ui", 2.0)
    assert events[0].type == "compliance.consent" and events[0].data["source"] == "ui"
    for line in AGENT_LINES:
        tracker.observe(AGENT, said(line), 3.0)
    tracker.observe(CUSTOMER, said("i understand and agree"), 4.0)
    assert tracker.can_submit
    tracker.record_consent(False, "bob", "ui", 5.0)
    assert not tracker.can_submit
    assert [entry["granted"] for entry in tracker.consent_log] == [True, False]


def test_finished_tracker_ignores_further_speech() -> None:
    script = load_script("builtin:demo_insurance_en")
    tracker = StageTracker(script)
    tracker.start(0.0)
    for line in AGENT_LINES:
        tracker.observe(AGENT, said(line), 1.0)
    tracker.observe(CUSTOMER, said("i have understood and i agree"), 2.0)
    assert tracker.can_submit
    assert tracker.finish(3.0) == []
    assert tracker.observe(AGENT, said(AGENT_LINES[0]), 4.0) == []


def test_chinese_script_on_transcripts() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    script = load_script(str(repo / "configs/scripts/bank_insurance_zh.yaml"))
    tracker = StageTracker(script, require_consent=True)
    tracker.start(0.0)
    events = tracker.observe(CUSTOMER, said("我不同意录音"), 1.0)
    assert [e.data["reason"] for e in events if e.type == "compliance.stage_rejected"] == [
        "negation"
    ]
    tracker.observe(CUSTOMER, said("好的 我 同意 录音 录像"), 2.0)  # ASR output has spaces
    assert tracker.consent_given
    for line in ["您好我是本行的理财经理", "本产品由平安人寿保险公司承保", "本产品不是存款，投资有风险",
                 "下面宣读责任免除条款", "犹豫期为十五天"]:
        tracker.observe(AGENT, said(line), 3.0)
    events = tracker.observe(CUSTOMER, said("我没有了解"), 4.0)
    assert status(tracker, "customer_confirmation") != "completed"
    tracker.observe(CUSTOMER, said("我已瞭解並同意"), 5.0)  # traditional characters
    assert tracker.can_submit, [(s.spec.id, s.status) for s in tracker.stages]


def test_chinese_script_prompts_the_agent_in_chinese() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    script = load_script(str(repo / "configs/scripts/bank_insurance_zh.yaml"))
    tracker = StageTracker(script)

    def prompts(events: list[Emitted]) -> list[str]:
        return [e.data["text"] for e in events if e.type == "compliance.prompt"]

    assert prompts(tracker.start(0.0)) == ["请告知客户本次销售过程将全程录音录像，并征得客户同意。"]
    assert prompts(tracker.observe(CUSTOMER, said("我不同意录音"), 1.0)) == [
        "客户未确认（识别到：“我不同意录音”）。请告知客户本次销售过程将全程录音录像，并征得客户同意。"
    ]
    # The consent stage's deadline (90 s) passes: the miss is explained in Chinese.
    missed = prompts(tracker.tick(91.0))
    assert missed[0] == "已超时：请告知客户本次销售过程将全程录音录像，并征得客户同意。", missed
    for line in ["我是本行的理财经理", "本产品由平安人寿保险公司承保", "本产品不是存款，投资有风险",
                 "下面宣读责任免除条款", "犹豫期为十五天"]:
        tracker.observe(AGENT, said(line), 100.0)
    # The missed consent is still open when the customer confirms.
    assert prompts(tracker.observe(CUSTOMER, said("我已了解并同意"), 101.0)) == [
        "客户在本环节完成前已作确认：请告知客户本次销售过程将全程录音录像，并征得客户同意。"
    ]
    in_order = StageTracker(script)
    in_order.start(0.0)
    in_order.observe(CUSTOMER, said("我同意录音录像"), 1.0)
    for line in ["我是本行的理财经理", "本产品由平安人寿保险公司承保", "本产品不是存款，投资有风险",
                 "下面宣读责任免除条款", "犹豫期为十五天"]:
        in_order.observe(AGENT, said(line), 2.0)
    assert prompts(in_order.observe(CUSTOMER, said("我已了解并同意"), 3.0)) == [
        "所有必需的话术环节均已完成。"
    ]
    # A stage without a prompt of its own gets one built from its title, in Chinese.
    bare = parse_script({
        "name": "x", "title": "x", "language": "zh",
        "stages": [{"id": "s", "title": "客户确认", "role": "customer", "kind": "confirmation",
                    "phrases": ["我同意"]}],
    }, "bare.yaml")
    assert prompts(StageTracker(bare).start(0.0)) == ["请客户确认：客户确认（例如：“我同意”）"]


def test_report_of_a_chinese_script_reads_in_chinese() -> None:
    from pathlib import Path

    from finrtc.compliance.report import render_html

    repo = Path(__file__).resolve().parents[2]
    script = load_script(str(repo / "configs/scripts/bank_insurance_zh.yaml"))
    tracker = StageTracker(script)
    tracker.start(0.0)
    tracker.observe(CUSTOMER, said("我同意录音录像"), 1.0)
    report = {
        "room": "r1", "status": "final", "can_submit": tracker.can_submit,
        "script": {"name": script.name, "title": script.title, "language": script.language},
        "stages": tracker.stage_states(), "verifiable": True,
        "consent": {"required": False, "given": tracker.consent_given, "events": []},
        "audio": {"dropped_seconds": 0.0, "problems": []},
        "recognizer": {"engine": "vosk", "model": "model_dir:/m", "model_digest": "d" * 64},
    }
    page = render_html(report)
    assert '<html lang="zh-CN">' in page and "合规报告：房间 r1" in page
    assert "可否提交销售: <b>否</b>" in page and "客户同意录音录像" in page
    assert f"识别引擎 vosk, 模型\nmodel_dir:/m, sha256 {'d' * 64}" in page
    report["script"]["language"] = "en"
    assert "Sale can be submitted: <b>no</b>" in render_html(report)
