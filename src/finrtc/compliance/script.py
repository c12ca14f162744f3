"""Sales scripts: the ordered stages a call must go through, loaded from YAML, strictly checked.

A script names, per stage, who must speak (agent or customer), the accepted phrasings, whether
the stage is mandatory and an optional deadline. See docs/compliance.md for the format.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from finrtc.compliance.wording import ENGLISH, Wording
from finrtc.config_base import StrictModel, format_validation_error
from finrtc.errors import ConfigError
from finrtc.model import Role

BUILTIN_PREFIX = "builtin:"
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

StageKind = Literal["statement", "confirmation", "consent"]


class StageSpec(StrictModel):
    id: str
    title: str = Field(min_length=1, max_length=200)
    role: Literal["agent", "customer"]
    # statement: the speaker states something (negation inside it is fine: "returns are not
    # guaranteed"). confirmation / consent: the speaker agrees; a negation rejects the match.
    kind: StageKind = "statement"
    phrases: list[str] = Field(min_length=1, max_length=50)
    # The live prompt shown to the agent while this stage is the next required item.
    prompt: str | None = Field(default=None, max_length=500)
    # Seconds after the session started by which the stage must be completed.
    deadline_s: float | None = Field(default=None, gt=0)
    mandatory: bool = True
    # Whether the stage only counts after consent (when the room policy requires consent).
    # Default: every stage except the consent stage itself.
    requires_consent: bool | None = None
    # Per-stage override of the script's matching tolerance.
    tolerance: float | None = Field(default=None, ge=0, lt=1)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("must be lowercase letters, digits and _, starting with a letter")
        return value

    @field_validator("phrases")
    @classmethod
    def _check_phrases(cls, phrases: list[str]) -> list[str]:
        for phrase in phrases:
            if not phrase.strip():
                raise ValueError("phrases must not be empty")
            if len(phrase) > 300:
                raise ValueError("a phrase must be at most 300 characters")
        return phrases

    @property
    def speaker(self) -> Role:
        return Role(self.role)

    @property
    def negation_sensitive(self) -> bool:
        return self.kind != "statement"

    @property
    def gated_by_consent(self) -> bool:
        if self.requires_consent is not None:
            return self.requires_consent
        return self.kind != "consent"

    @property
    def prompt_text(self) -> str:
        return self.prompt_in(ENGLISH)

    def prompt_in(self, wording: Wording) -> str:
        """The stage's prompt, or one built from its title in the script's language."""
        if self.prompt:
            return self.prompt
        template = (
            wording.ask_customer_confirm if self.role == "customer" else wording.next_required_item
        )
        return template.format(title=self.title, phrase=self.phrases[0])


class Script(StrictModel):
    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=200)
    # Language of the phrases; the recognizer's model must speak it.
    language: Literal["en", "zh"]
    # Maximum edit cost per word / syllable for a phrase to match (0 = exact).
    tolerance: float = Field(default=0.25, ge=0, lt=1)
    stages: list[StageSpec] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _check_stages(self) -> Script:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.id in seen:
                raise ValueError(f"stage id {stage.id!r} is used twice; ids must be unique")
            seen.add(stage.id)
        if sum(1 for stage in self.stages if stage.kind == "consent") > 1:
            raise ValueError("at most one stage may have kind: consent")
        return self

    def stage(self, stage_id: str) -> StageSpec:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)

    @property
    def consent_stage(self) -> StageSpec | None:
        return next((stage for stage in self.stages if stage.kind == "consent"), None)

    def phrases_for(self, role: Role) -> list[str]:
        """Every phrase a speaker of `role` may say, deduplicated, in script order."""
        phrases: dict[str, None] = {}
        for stage in self.stages:
            if stage.role == role.value:
                phrases.update(dict.fromkeys(stage.phrases))
        return list(phrases)


def parse_script(data: object, source: str) -> Script:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a script must be a mapping, got {type(data).__name__}")
    try:
        return Script.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{format_validation_error(error)}") from None


def _read(text: str, source: str) -> Script:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{source} is not valid YAML{where}: {problem}") from None
    return parse_script(data, source)


def builtin_scripts() -> list[str]:
    folder = resources.files("finrtc.compliance") / "scripts"
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def load_script(reference: str, base_dir: Path | None = None) -> Script:
    """Load "builtin:NAME" (packaged with finrtc) or a YAML file path.

    Relative paths resolve against `base_dir` (the config file's folder).
    """
    if reference.startswith(BUILTIN_PREFIX):
        name = reference.removeprefix(BUILTIN_PREFIX)
        if name not in builtin_scripts():
            available = ", ".join(builtin_scripts()) or "none"
            raise ConfigError(f"unknown built-in script {reference!r}; available: {available}")
        resource = resources.files("finrtc.compliance") / "scripts" / f"{name}.yaml"
        return _read(resource.read_text(encoding="utf-8"), reference)
    path = Path(reference).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"script file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read script file {path}: {error.strerror}") from None
    return _read(text, str(path))


def load_scripts(scripts: dict[str, str], base_dir: Path | None = None) -> dict[str, Script]:
    """Load and validate every script named in `compliance.scripts` (done at start-up)."""
    loaded: dict[str, Script] = {}
    for name, reference in scripts.items():
        try:
            loaded[name] = load_script(reference, base_dir)
        except ConfigError as error:
            raise ConfigError(f"compliance.scripts.{name}: {error}") from None
    return loaded
