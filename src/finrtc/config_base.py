"""The base every configuration model derives from: unknown keys and wrong types are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Strict YAML model: no unknown keys, no silent type coercion ("8080" is not a port)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
