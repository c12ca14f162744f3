"""Phrase matching on text alone: ASR noise, negation, Chinese pinyin, traditional characters."""

from __future__ import annotations

import pytest

from finrtc.compliance.matcher import PhraseMatcher, normalize, tokenize

CONFIRM_EN = ["I have understood and I agree", "I understand and agree"]
CONFIRM_ZH = ["我已了解并同意", "我同意"]


@pytest.fixture
def matcher() -> PhraseMatcher:
    return PhraseMatcher(tolerance=0.25)


@pytest.mark.parametrize(
    "text",
    [
        "I have understood and I agree",
        "uh yes I have understood and agree",
        "well I understand and I agree to it",
        "I HAVE UNDERSTOOD, AND I AGREE.",
        "i have understand and i agree",  # ASR tense slip
        "okay i understand and agree thank you",
    ],
)
def test_english_confirmations_match(matcher: PhraseMatcher, text: str) -> None:
    assert matcher.accepts(text, CONFIRM_EN, negation_sensitive=True)


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("I have not understood and I do not agree", "not"),
        ("I don't understand and I don't agree", "not"),
        ("I haven't understood and I agree", "not"),
        ("no I understand and agree", "no"),
        ("I never understood and agree", "never"),
    ],
)
def test_english_negations_are_refused_with_their_cue(
    matcher: PhraseMatcher, text: str, cue: str
) -> None:
    found = matcher.match(text, CONFIRM_EN, negation_sensitive=True)
    assert found is not None and found.negated and found.negation_cue == cue
    assert not matcher.accepts(text, CONFIRM_EN, negation_sensitive=True)


@pytest.mark.parametrize(
    "text",
    [
        "I do not agree",
        "I don't understand",
        "I disagree",
        "I have understood the agreement",
        "I have underwritten the contract",
        "I stood in the garden",
        "",
        "could you repeat that",
    ],
)
def test_english_distractors_do_not_match(matcher: PhraseMatcher, text: str) -> None:
    assert not matcher.accepts(text, CONFIRM_EN, negation_sensitive=True)


def test_statements_may_contain_negation(matcher: PhraseMatcher) -> None:
    phrases = ["returns are not guaranteed", "the policy does not cover"]
    found = matcher.match("please note returns are not guaranteed", phrases)
    assert found is not None and not found.negated
    assert found.matched_text == "returns are not guaranteed"
    # Even when negation-sensitive, the phrase's own "not" is not a cue.
    assert matcher.accepts("the policy does not cover floods", phrases, negation_sensitive=True)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("my game is to win", "my name is"),
        ("this pottery is issued by the museum", "this policy is issued by"),
        ("the police do not care", "the policy does not cover"),
        ("returns are guaranteed", "returns are not guaranteed"),
    ],
)
def test_similar_sounding_statements_do_not_match(
    matcher: PhraseMatcher, text: str, phrase: str
) -> None:
    assert matcher.match(text, [phrase]) is None


def test_same_stem_and_garbled_function_words_match(matcher: PhraseMatcher) -> None:
    found = matcher.match("the policy does not covered floods", ["the policy does not cover"])
    assert found is not None and found.distance == pytest.approx(0.3)
    assert matcher.accepts("this policy is issued bye northwind", ["this policy is issued by"])
    assert not matcher.accepts("the policy has not covered floods", ["the policy does not cover"])


def test_near_miss_words_cost_partially(matcher: PhraseMatcher) -> None:
    assert matcher.accepts("the policy does not cover", ["the policy does not cover"])
    assert not matcher.accepts("the police do not care", ["the policy does not cover"])
    exact = matcher.match("i agree", ["i agree"])
    assert exact is not None and exact.score == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "我已了解并同意",
        "嗯，我已了解并同意。",
        "我已瞭解並同意",  # traditional characters
        "我已了结并同意",  # homophone 了结 for 了解
        "我已了解病同意",  # homophone 病 for 并
        "好的我同意",
    ],
)
def test_chinese_confirmations_match(matcher: PhraseMatcher, text: str) -> None:
    assert matcher.accepts(text, CONFIRM_ZH, negation_sensitive=True)


@pytest.mark.parametrize(
    ("text", "cue"),
    [("我不同意", "不"), ("我没有了解", "没"), ("我并不了解", "不"), ("我未了解并同意", "未")],
)
def test_chinese_negations_are_refused(matcher: PhraseMatcher, text: str, cue: str) -> None:
    phrases = [*CONFIRM_ZH, "我已了解"]
    found = matcher.match(text, phrases, negation_sensitive=True)
    assert found is not None and found.negated and found.negation_cue == cue
    assert not matcher.accepts(text, phrases, negation_sensitive=True)


@pytest.mark.parametrize("text", ["我已知道", "同学", "今天天气很好", "我要退保"])
def test_chinese_distractors_do_not_match(matcher: PhraseMatcher, text: str) -> None:
    assert not matcher.accepts(text, CONFIRM_ZH, negation_sensitive=True)


def test_chinese_statement_with_negation_matches(matcher: PhraseMatcher) -> None:
    assert matcher.accepts("请注意本产品不是存款，投资有风险", ["本产品不是存款"])


def test_pinyin_near_syllables_cost_half() -> None:
    strict = PhraseMatcher(tolerance=0.2)
    # zh/z and ing/in are common accent / ASR confusions: they cost half a syllable.
    found = strict.match("资情同意", ["知情同意"])  # zi for zhi
    assert found is not None and found.distance == 0.5
    found = strict.match("知秦同意", ["知情同意"])  # qin for qing
    assert found is not None and found.distance == 0.5
    assert not strict.accepts("资金同意", ["知情同意"])  # zi jin: two differences
    assert not strict.accepts("十分", ["是否同意"])


def test_normalization() -> None:
    assert normalize("I Don't") == "i do not"
    assert normalize("瞭解") == "了解"
    assert [token.key for token in tokenize("我已了解 OK")] == ["wo", "yi", "liao", "jie", "ok"]
    assert [token.key for token in tokenize("we can't")] == ["we", "can", "not"]
    with pytest.raises(ValueError):
        PhraseMatcher(tolerance=1.5)
