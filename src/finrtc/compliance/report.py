"""A readable HTML rendering of a compliance report (the JSON stays the record of truth),
in the script's language (a Chinese script's report reads in Chinese; ids and values stay)."""

from __future__ import annotations

import datetime
from html import escape
from typing import Any

_STATUS_COLORS = {
    "completed": "#1b7f3b",
    "missed": "#b3261e",
    "active": "#8a6d00",
    "pending": "#555",
}


_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "lang": "en", "title": "Compliance report", "heading": "Compliance report: room {room}",
        "script": "Script", "language": "language", "report_is": "report is",
        "started": "Started", "ended": "ended", "can_submit": "Sale can be submitted",
        "recognized": "Audio fully recognized", "lost": "no — audio was lost before recognition",
        "dropped": "dropped", "stage": "Stage", "speaker": "Speaker", "status": "Status",
        "media_time": "Media time (s)", "session_time": "Session time (s)",
        "matched": "Matched text", "confidence": "Confidence", "optional": "optional",
        "late": "late", "consent": "Consent", "required": "Required", "given": "given",
        "granted": "granted", "withdrawn": "withdrawn", "by": "by", "via": "via", "at": "at",
        "none": "none", "problems": "Problems", "recognizer": "Recognizer", "model": "model",
        "yes": "yes", "no": "no",
    },
    "zh": {
        "lang": "zh-CN", "title": "合规报告", "heading": "合规报告：房间 {room}",
        "script": "话术", "language": "语言", "report_is": "报告状态",
        "started": "开始于", "ended": "结束于", "can_submit": "可否提交销售",
        "recognized": "音频是否全部识别", "lost": "否 — 部分音频在识别前丢失",
        "dropped": "丢失", "stage": "环节", "speaker": "发言人", "status": "状态",
        "media_time": "媒体时间（秒）", "session_time": "会话时间（秒）",
        "matched": "匹配文本", "confidence": "置信度", "optional": "可选",
        "late": "逾时", "consent": "同意录音录像", "required": "是否必需", "given": "是否已同意",
        "granted": "同意", "withdrawn": "撤回", "by": "操作人", "via": "方式", "at": "时间",
        "none": "无", "problems": "问题", "recognizer": "识别引擎", "model": "模型",
        "yes": "是", "no": "否",
    },
}


def _time(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    moment = datetime.datetime.fromtimestamp(float(value), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return escape(str(value))


def render_html(report: dict[str, Any]) -> str:
    script = report.get("script", {})
    text = _LABELS.get(str(script.get("language")), _LABELS["en"])

    def yes_no(flag: Any) -> str:
        return text["yes"] if flag else text["no"]

    consent = report.get("consent", {})
    audio = report.get("audio", {})
    rows = []
    for stage in report.get("stages", []):
        status = str(stage.get("status"))
        color = _STATUS_COLORS.get(status, "#555")
        detail = status
        if stage.get("late"):
            detail += f" ({text['late']})"
        if stage.get("missed_reason") and status == "missed":
            detail += f" — {stage['missed_reason']}"
        rows.append(
            "<tr>"
            f"<td>{_cell(stage.get('title'))}<br><small>{_cell(stage.get('id'))}"
            f"{'' if stage.get('mandatory') else ' (' + text['optional'] + ')'}</small></td>"
            f"<td>{_cell(stage.get('role'))}</td>"
            f"<td style=\"color:{color};font-weight:bold\">{escape(detail)}</td>"
            f"<td>{_cell(stage.get('media_time'))}</td>"
            f"<td>{_cell(stage.get('completed_at_s'))}</td>"
            f"<td>{_cell(stage.get('matched_text'))}</td>"
            f"<td>{_cell(stage.get('confidence'))}"
            f"<br><small>{_cell(stage.get('confidence_source'))}</small></td>"
            "</tr>"
        )
    consent_rows = "".join(
        f"<li>{text['granted'] if entry.get('granted') else text['withdrawn']} {text['by']} "
        f"{_cell(entry.get('participant'))} {text['via']} {_cell(entry.get('source'))} "
        f"{text['at']} {_cell(entry.get('at_s'))} s</li>"
        for entry in consent.get("events", [])
    ) or f"<li>{text['none']}</li>"
    problems = "".join(
        f"<li>{_cell(problem.get('kind'))}: {_cell(problem.get('reason'))}</li>"
        for problem in audio.get("problems", [])
    )
    submit = yes_no(report.get("can_submit"))
    verifiable = text["yes"] if report.get("verifiable") else text["lost"]
    recognizer = report.get("recognizer", {})
    heading = text["heading"].format(room=_cell(report.get("room")))
    return f"""<!doctype html>
<html lang="{text['lang']}"><head><meta charset="utf-8">
<title>{text['title']} — {_cell(report.get('room'))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: .4em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }}
</style></head><body>
<h1>{heading}</h1>
<p>{text['script']} <b>{_cell(script.get('title'))}</b> ({_cell(script.get('name'))},
{text['language']} {_cell(script.get('language'))}) — {text['report_is']}
<b>{_cell(report.get('status'))}</b>.</p>
<p>{text['started']} {_time(report.get('started_at'))}; {text['ended']}
{_time(report.get('ended_at'))}.</p>
<p>{text['can_submit']}: <b>{submit}</b>. {text['recognized']}: <b>{verifiable}</b>
({text['dropped']} {_cell(audio.get('dropped_seconds'))} s).</p>
<table><thead><tr><th>{text['stage']}</th><th>{text['speaker']}</th><th>{text['status']}</th>
<th>{text['media_time']}</th><th>{text['session_time']}</th><th>{text['matched']}</th>
<th>{text['confidence']}</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>{text['consent']}</h2><p>{text['required']}: {yes_no(consent.get('required'))};
{text['given']}: {yes_no(consent.get('given'))}.</p><ul>{consent_rows}</ul>
{f'<h2>{text["problems"]}</h2><ul>{problems}</ul>' if problems else ''}
<p><small>{text['recognizer']} {_cell(recognizer.get('engine'))}, {text['model']}
{_cell(recognizer.get('model'))}, sha256 {_cell(recognizer.get('model_digest'))}.</small></p>
</body></html>
"""
