"""Configuration of script compliance (the `compliance:` section of the YAML file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from finrtc.config_base import StrictModel


class RecognizerConfig(StrictModel):
    backend: Literal["pocketsphinx", "model_dir"] = "pocketsphinx"
    model_dir: str | None = None
    model_sha256: str | None = None
    workers: int = Field(default=1, ge=1, le=8)
    queue_seconds: float = Field(default=10.0, gt=0)


class ComplianceConfig(StrictModel):
    enabled: bool = True
    # name -> YAML file; relative paths resolve against the config file's folder.
    scripts: dict[str, str] = Field(default_factory=dict)
    recognizer: RecognizerConfig = Field(default_factory=RecognizerConfig)
