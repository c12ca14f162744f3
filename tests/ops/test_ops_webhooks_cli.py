"""`finrtc webhooks ping` in a real subprocess against real receivers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from finrtc.webhooks.signing import verify_signature

API_SECRET = "api-" + "a" * 44
CRM_SECRET = "crm-" + "c" * 44
# What finrtc.cli.main does once "finrtc.webhooks.cli" is in its SUBCOMMAND_MODULES.
PROGRAM = (
    "import argparse, sys\n"
    "from finrtc.errors import FinrtcError\n"
    "from finrtc.webhooks import cli\n"
    "parser = argparse.ArgumentParser(prog='finrtc')\n"
    "cli.register(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "try:\n"
    "    sys.exit(args.handler(args))\n"
    "except FinrtcError as error:\n"
    "    print(f'finrtc: error: {error}', file=sys.stderr)\n"
    "    sys.exit(2)\n"
)


@pytest.fixture
async def verifying_receiver() -> AsyncIterator[Callable[[str], Any]]:
    runners: list[web.AppRunner] = []

    async def make(secret: str) -> tuple[str, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            seen.append(json.loads(body))
            ok = verify_signature(secret, request.headers, body)
            return web.Response(status=204 if ok else 401)

        app = web.Application()
        app.router.add_post("/hooks", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/hooks", seen

    yield make
    for runner in runners:
        await runner.cleanup()


async def ping(config: Path, *extra: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROGRAM, "webhooks", "ping", "--config", str(config), *extra,
        env={**os.environ, "FINRTC_API_SECRET": API_SECRET, "CRM_SECRET": CRM_SECRET},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


async def test_ping_reports_each_endpoint(verifying_receiver: Any, tmp_path: Path) -> None:
    crm_url, crm_seen = await verifying_receiver(CRM_SECRET)
    audit_url, audit_seen = await verifying_receiver(API_SECRET)
    misconfigured_url, _ = await verifying_receiver("not-the-secret-" + "x" * 40)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    config = tmp_path / "finrtc.yaml"
    config.write_text(
        "webhooks:\n  endpoints:\n"
        f"    - {{name: crm, url: '{crm_url}', secret_env: CRM_SECRET}}\n"
        f"    - {{name: audit, url: '{audit_url}'}}\n"
        f"    - {{name: wrong, url: '{misconfigured_url}'}}\n"
        f"    - {{name: down, url: 'http://127.0.0.1:{dead_port}/x'}}\n"
    )
    status, output = await ping(config)
    assert status == 2
    lines = dict(line.split(": ", 1) for line in output.strip().splitlines())
    assert lines["crm"].startswith("OK, HTTP 204")
    assert lines["audit"].startswith("OK, HTTP 204")
    assert lines["wrong"].startswith("FAILED, HTTP 401 (does the backend verify")
    assert lines["down"].startswith("FAILED, ClientConnectorError")
    assert crm_seen[0]["type"] == "ping" and crm_seen[0]["data"]["endpoint"] == "crm"
    assert audit_seen[0]["id"] != crm_seen[0]["id"]

    status, output = await ping(config, "--endpoint", "crm")
    assert status == 0 and output.startswith("crm: OK")
    status, output = await ping(config, "--endpoint", "nope")
    assert status == 2 and "no webhook endpoint named 'nope'" in output
