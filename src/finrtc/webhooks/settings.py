"""Configuration of signed webhooks (the `webhooks:` section of the YAML file)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from finrtc.config_base import StrictModel

# Endpoint names become a metric label value and a log field: keep them short and tame.
ENDPOINT_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class WebhookEndpoint(StrictModel):
    url: str
    # Short name used as the `endpoint` metric label and in logs (never the URL, which may carry a
    # token). Defaults to "endpoint<N>" by position.
    name: str | None = None
    # Signing secret. Prefer `secret_file` or `secret_env` so the secret stays out of the YAML;
    # when none is set the API secret signs.
    secret: str | None = None
    # File holding the secret (relative paths resolve against the config file's folder).
    secret_file: str | None = None
    # Environment variable holding the secret.
    secret_env: str | None = None
    # Event types to deliver: names or glob patterns ("room_started", "compliance.*"); empty
    # means every event.
    events: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL {url!r} must start with http:// or https://")
        return url

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str | None) -> str | None:
        if name is not None and not ENDPOINT_NAME_PATTERN.match(name):
            raise ValueError(
                f"endpoint name {name!r} must be 1-32 characters of a-z, 0-9, '_' or '-', "
                "starting with a letter or digit"
            )
        return name

    @model_validator(mode="after")
    def _one_secret_source(self) -> WebhookEndpoint:
        sources = [s for s in (self.secret, self.secret_file, self.secret_env) if s is not None]
        if len(sources) > 1:
            raise ValueError("set at most one of secret, secret_file and secret_env")
        return self


class WebhooksConfig(StrictModel):
    endpoints: list[WebhookEndpoint] = Field(default_factory=list)
    # Events waiting per endpoint; past this new events are dropped (counted and logged).
    queue_size: int = Field(default=1000, ge=1)
    # Concurrent deliveries per endpoint; with more than one, events may arrive out of order
    # (each body carries the room sequence number and creation time for ordering).
    concurrency: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=6, ge=1)
    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _unique_names(self) -> WebhooksConfig:
        names = [e.name or f"endpoint{i}" for i, e in enumerate(self.endpoints)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            repeated = ", ".join(duplicates)
            raise ValueError(f"webhook endpoint names must be unique; repeated: {repeated}")
        return self
