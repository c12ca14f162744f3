"""The base every configuration model derives from: unknown keys and wrong types are errors.

It sits below every settings module (config, compliance scripts, hook options) so that none of
them needs to import `finrtc.config`, which imports them all.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Strict YAML model: no unknown keys, no silent type coercion ("8080" is not a port)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in item["loc"])
        path = path.replace(".[", "[")
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against configs/reference.yaml)"
        got = item.get("input")
        detail = (
            f" (got {got!r})"
            if item["type"] not in ("extra_forbidden", "missing") and not isinstance(got, dict)
            else ""
        )
        lines.append(f"  {path or '<root>'}: {message}{detail}")
    return "\n".join(lines)
