"""Configuration of script compliance (the `compliance:` section of the YAML file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from finrtc.config_base import StrictModel


class RecognizerConfig(StrictModel):
    # pocketsphinx: the en-us model shipped in the pocketsphinx wheel.
    # model_dir: a model folder (with finrtc-model.yaml) pinned by model_sha256.
    backend: Literal["pocketsphinx", "model_dir"] = "pocketsphinx"
    model_dir: str | None = None
    model_sha256: str | None = None
    # Recognizer worker processes shared by all rooms (one decoder per audio track).
    workers: int = Field(default=1, ge=1, le=8)
    # Audio of one track that may wait for its worker before new audio is dropped (and alerted).
    queue_seconds: float = Field(default=10.0, gt=0, le=120)
    # Full decoding of speech segments: the evidence transcript and the negation check.
    # on_demand: decode the utterances that matter - a script phrase was spotted in them, the
    #   speaker owes the next required stage, or the script has phrases spotting cannot find.
    # always: decode every utterance (a transcript of the whole call; ~4x the CPU of spotting).
    # off: keyphrase spotting only (cheapest, but negated confirmations cannot be told apart).
    transcribe: Literal["on_demand", "always", "off"] = "on_demand"
    # Speech segments longer than this are transcribed in pieces, so a monologue or a noisy line
    # cannot grow one decoding without bound (a phrase across a cut may be missed in the
    # transcript; keyphrase spotting is not cut).
    max_utterance_s: float = Field(default=15.0, ge=3.0, le=120.0)
    # Scheduling niceness of the worker processes (0 = the media path's priority). Recognition
    # has a queue to catch up from; on busy cores media frames go first.
    nice: int = Field(default=10, ge=0, le=19)


class ComplianceConfig(StrictModel):
    enabled: bool = True
    # name -> YAML file; relative paths resolve against the config file's folder.
    # "builtin:NAME" names a script shipped with finrtc (e.g. builtin:demo_insurance_en).
    scripts: dict[str, str] = Field(default_factory=dict)
    recognizer: RecognizerConfig = Field(default_factory=RecognizerConfig)
    # Seconds between deadline checks.
    tick_interval_s: float = Field(default=1.0, gt=0, le=60)
