"""`finrtc webhooks ping --config FILE`: send one signed `ping` event to each endpoint.

For operators wiring a backend: it proves the URL is reachable, the backend verifies the
signature with the secret it was given, and it answers 2xx, before a real call depends on it.
One attempt per endpoint, no retries; exit 0 when every endpoint accepted, 2 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from finrtc.config import LoadedConfig, load_config
from finrtc.errors import ConfigError
from finrtc.webhooks.sender import (
    USER_AGENT,
    endpoint_name,
    new_event,
    resolve_endpoint_secret,
    signed_headers,
)

PING_EVENT = "ping"


@dataclass(frozen=True)
class PingResult:
    endpoint: str
    event_id: str
    status: int | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def ping_endpoints(
    loaded: LoadedConfig, only: str | None = None, timeout_s: float | None = None
) -> list[PingResult]:
    config = loaded.config.webhooks
    base_dir = loaded.source.parent if loaded.source is not None else None
    targets = [
        (position, endpoint)
        for position, endpoint in enumerate(config.endpoints)
        if only is None or endpoint_name(endpoint, position) == only
    ]
    if not targets:
        known = ", ".join(endpoint_name(e, i) for i, e in enumerate(config.endpoints)) or "none"
        raise ConfigError(
            f"no webhook endpoint {'named ' + repr(only) if only else 'configured'} "
            f"(webhooks.endpoints: {known})"
        )
    secrets = [
        resolve_endpoint_secret(endpoint, position, loaded.api_secret, base_dir)
        for position, endpoint in targets
    ]
    timeout = aiohttp.ClientTimeout(total=timeout_s or config.timeout_s)
    results = []
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"User-Agent": USER_AGENT}, trust_env=False
    ) as session:
        for (position, endpoint), secret in zip(targets, secrets, strict=True):
            name = endpoint_name(endpoint, position)
            event = new_event(
                PING_EVENT, "", {"endpoint": name, "message": "finrtc webhook test"},
                occurred_at=time.time(),
            )
            headers = signed_headers(secret.encode(), event, 1, int(time.time()))
            started = time.perf_counter()
            try:
                async with session.post(
                    endpoint.url, data=event.body, headers=headers, allow_redirects=False
                ) as response:
                    status: int | None = response.status
                    error = None
            except TimeoutError:
                status, error = None, f"no answer within {timeout.total:.1f} s"
            except aiohttp.ClientError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            results.append(
                PingResult(name, event.id, status, time.perf_counter() - started, error)
            )
    return results


def run_ping(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    results = asyncio.run(ping_endpoints(loaded, args.endpoint, args.timeout))
    for result in results:
        if result.ok:
            verdict = f"OK, HTTP {result.status}"
        elif result.status is not None:
            verdict = f"FAILED, HTTP {result.status}"
            if result.status in (401, 403):
                verdict += " (does the backend verify with the same secret?)"
        else:
            verdict = f"FAILED, {result.error}"
        print(f"{result.endpoint}: {verdict} in {result.seconds * 1000:.0f} ms ({result.event_id})")
    return 0 if all(result.ok for result in results) else 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("webhooks", help="test the configured webhook endpoints")
    actions = parser.add_subparsers(dest="webhooks_command", metavar="ACTION")
    actions.required = True
    ping = actions.add_parser(
        "ping",
        help="send one signed 'ping' event to each endpoint (exit 0 when all answer 2xx)",
    )
    ping.add_argument("--config", type=Path, required=True, help="YAML config file")
    ping.add_argument("--endpoint", metavar="NAME", help="only the endpoint with this name")
    ping.add_argument("--timeout", type=float, metavar="SECONDS", help="default: timeout_s")
    ping.set_defaults(handler=run_ping)
