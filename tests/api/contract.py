"""Check real responses against the OpenAPI document: status documented, body valid."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator


def operation(doc: dict[str, Any], method: str, template: str) -> dict[str, Any]:
    path_item = doc["paths"].get(template)
    assert path_item is not None, f"{template} is not in the OpenAPI document"
    op = path_item.get(method.lower())
    assert op is not None, f"{method} {template} is not in the OpenAPI document"
    return op  # type: ignore[no-any-return]


def check_response(
    doc: dict[str, Any],
    method: str,
    template: str,
    status: int,
    body: Any = None,
    content_type: str = "application/json",
) -> None:
    """Fails unless `status` is documented for the operation and a JSON `body` fits its schema."""
    responses = operation(doc, method, template)["responses"]
    assert str(status) in responses, (
        f"{method} {template} answered {status}, which the document does not list ({sorted(responses)})"
    )
    response = responses[str(status)]
    content = response.get("content", {})
    if body is None:
        return
    assert content_type in content, f"{method} {template} {status}: {content_type} not documented"
    schema = content[content_type]["schema"]
    # Resolve #/components/... references against the document itself.
    root = {"components": doc["components"], **schema}
    Draft202012Validator(root).validate(body)
