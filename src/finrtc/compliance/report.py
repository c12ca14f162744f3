"""A readable HTML rendering of a compliance report (the JSON stays the record of truth)."""

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
    consent = report.get("consent", {})
    audio = report.get("audio", {})
    rows = []
    for stage in report.get("stages", []):
        status = str(stage.get("status"))
        color = _STATUS_COLORS.get(status, "#555")
        detail = status
        if stage.get("late"):
            detail += " (late)"
        if stage.get("missed_reason") and status == "missed":
            detail += f" — {stage['missed_reason']}"
        rows.append(
            "<tr>"
            f"<td>{_cell(stage.get('title'))}<br><small>{_cell(stage.get('id'))}"
            f"{'' if stage.get('mandatory') else ' (optional)'}</small></td>"
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
        f"<li>{'granted' if entry.get('granted') else 'withdrawn'} by "
        f"{_cell(entry.get('participant'))} via {_cell(entry.get('source'))} at "
        f"{_cell(entry.get('at_s'))} s</li>"
        for entry in consent.get("events", [])
    ) or "<li>none</li>"
    problems = "".join(
        f"<li>{_cell(problem.get('kind'))}: {_cell(problem.get('reason'))}</li>"
        for problem in audio.get("problems", [])
    )
    submit = "yes" if report.get("can_submit") else "no"
    verifiable = "yes" if report.get("verifiable") else "no — audio was lost before recognition"
    recognizer = report.get("recognizer", {})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Compliance report — {_cell(report.get('room'))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: .4em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }}
</style></head><body>
<h1>Compliance report: room {_cell(report.get('room'))}</h1>
<p>Script <b>{_cell(script.get('title'))}</b> ({_cell(script.get('name'))},
language {_cell(script.get('language'))}) — report is <b>{_cell(report.get('status'))}</b>.</p>
<p>Started {_time(report.get('started_at'))}; ended {_time(report.get('ended_at'))}.</p>
<p>Sale can be submitted: <b>{submit}</b>. Audio fully recognized: <b>{verifiable}</b>
(dropped {_cell(audio.get('dropped_seconds'))} s).</p>
<table><thead><tr><th>Stage</th><th>Speaker</th><th>Status</th><th>Media time (s)</th>
<th>Session time (s)</th><th>Matched text</th><th>Confidence</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>Consent</h2><p>Required: {'yes' if consent.get('required') else 'no'}; given:
{'yes' if consent.get('given') else 'no'}.</p><ul>{consent_rows}</ul>
{f'<h2>Problems</h2><ul>{problems}</ul>' if problems else ''}
<p><small>Recognizer {_cell(recognizer.get('engine'))}, model {_cell(recognizer.get('model'))},
sha256 {_cell(recognizer.get('model_digest'))}.</small></p>
</body></html>
"""
