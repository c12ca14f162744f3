"""What the compliance tracker says to the agent, in the script's language.

A script's own prompts are written in its language; these are the tracker's texts around them
(why a stage was missed, what to do next). A 双录 agent reading English mid-sale would be
as lost as a London broker reading Chinese.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Wording:
    all_covered: str
    ask_consent_button: str
    consent_before_continuing: str
    # {prompt}: the stage's prompt.
    confirmation_before_covered: str
    # {heard}: the transcript; {prompt}: the stage's prompt.
    customer_did_not_confirm: str
    deadline_passed: str
    skipped: str
    # Fallback prompts of stages without one; {title}, {phrase}.
    ask_customer_confirm: str
    next_required_item: str


ENGLISH = Wording(
    all_covered="All required script items are covered.",
    ask_consent_button="Ask the customer to give consent to the recorded sale (consent button).",
    consent_before_continuing=(
        "Obtain the customer's consent to the recorded sale before continuing."
    ),
    confirmation_before_covered="Confirmation heard before this was covered: {prompt}",
    customer_did_not_confirm='The customer did not confirm (heard: "{heard}"). {prompt}',
    deadline_passed="Deadline passed",
    skipped="Skipped",
    ask_customer_confirm='Ask the customer to confirm: {title} (e.g. "{phrase}")',
    next_required_item='Next required item: {title} (e.g. "{phrase}")',
)

CHINESE = Wording(
    all_covered="所有必需的话术环节均已完成。",
    ask_consent_button="请客户点击“同意”按钮，同意本次销售过程录音录像。",
    consent_before_continuing="请先征得客户对本次销售过程录音录像的同意，再继续。",
    confirmation_before_covered="客户在本环节完成前已作确认：{prompt}",
    customer_did_not_confirm="客户未确认（识别到：“{heard}”）。{prompt}",
    deadline_passed="已超时",
    skipped="已跳过",
    ask_customer_confirm="请客户确认：{title}（例如：“{phrase}”）",
    next_required_item="下一必需环节：{title}（例如：“{phrase}”）",
)

_BY_LANGUAGE = {"en": ENGLISH, "zh": CHINESE}


def wording_for(language: str) -> Wording:
    return _BY_LANGUAGE.get(language, ENGLISH)
