"""Strict request parsing: every way a request can be malformed ends as a typed error.

Handlers read bodies, path names and query numbers only through these helpers, so a body that is
not UTF-8, a path segment that is no valid name or a query number in another script's digits is a
400 (or 415) with an actionable message, never an exception that reaches the client as a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from finrtc.auth import check_name
from finrtc.errors import BadRequestError

Model = TypeVar("Model", bound=BaseModel)
JSON_TYPE = "application/json"
# Path parameters whose values are names (rooms, identities); checked before any handler runs,
# so every route rejects them alike and the OpenAPI pattern is what the server enforces.
NAMED_PATH_PARAMETERS = {"room": "room name", "identity": "identity"}
NAMED_FIELDS = {"room": "room name", "name": "room name", "identity": "identity"}
# ASCII digits only: int() also takes "٣", "+1", " 1" and "1_000", which are not SEQ values.
_UNSIGNED = re.compile(r"^[0-9]{1,19}$")
MAX_UNSIGNED = 2**63 - 1


def check_path_names(request: web.Request) -> None:
    for key, what in NAMED_PATH_PARAMETERS.items():
        value = request.match_info.get(key)
        if value is not None:
            check_name(value, what)


def _integral_float(text: str) -> float | int:
    # JSON has one number type: 3600.0 is the integer 3600 (JSON Schema "integer" agrees), and
    # the strict models must see it as one.
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_json(raw: bytes, what: str = "the body") -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequestError(f"{what} is not UTF-8 (byte {error.start}); send UTF-8 JSON") from None
    try:
        return json.loads(text, parse_float=_integral_float)
    except json.JSONDecodeError as error:
        raise BadRequestError(f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequestError(f"{what} nests JSON too deeply") from None


async def json_object(request: web.Request, *, optional: bool = False, example: str = "") -> dict[str, Any]:
    """The request body as a JSON object; `optional`: an absent body is {}."""
    if optional and not request.can_read_body:
        return {}
    hint = f", e.g. {example}" if example else ""
    if request.content_type != JSON_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"send the body as Content-Type: {JSON_TYPE}{hint}")
    body = parse_json(await request.read())
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object{hint}")
    return body


async def utf8_body(request: web.Request, what: str) -> str:
    try:
        return (await request.read()).decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequestError(f"{what} is not valid UTF-8 (byte {error.start})") from None


def query_unsigned(request: web.Request, name: str, meaning: str) -> int | None:
    """An optional non-negative integer query parameter, in ASCII digits."""
    text = request.query.get(name)
    if text is None:
        return None
    if not _UNSIGNED.match(text) or int(text) > MAX_UNSIGNED:
        raise BadRequestError(
            f"{name} must be {meaning}: ASCII digits, at most {MAX_UNSIGNED}, not {text[:40]!r}"
        )
    return int(text)


def validation_message(error: ValidationError, prefix: str = "") -> str:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        if item["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown field")
        elif item["type"] == "missing":
            problems.append(f"{path}: required")
        else:
            got = item.get("input")
            problems.append(f"{path}: {item['msg']} (got {json.dumps(got, default=str)})")
    return "; ".join(problems)


def validated(model: type[Model], body: dict[str, Any]) -> Model:
    """`body` as `model`, or a 400 naming each offending field path."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise BadRequestError(validation_message(error)) from None


def check_name_fields(values: dict[str, str]) -> None:
    """Name fields of a body (field -> value) checked like path names, the field in the message."""
    for field, value in values.items():
        try:
            check_name(value, NAMED_FIELDS.get(field, field))
        except BadRequestError as error:
            raise BadRequestError(f"{field}: {error}") from None
