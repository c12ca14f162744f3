"""Configuration of signed webhooks (the `webhooks:` section of the YAML file)."""

from __future__ import annotations

from pydantic import Field

from finrtc.config_base import StrictModel


class WebhookEndpoint(StrictModel):
    url: str
    # Signing secret; when absent the API secret signs.
    secret: str | None = None


class WebhooksConfig(StrictModel):
    endpoints: list[WebhookEndpoint] = Field(default_factory=list)
    queue_size: int = Field(default=1000, ge=1)
    max_attempts: int = Field(default=6, ge=1)
    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
