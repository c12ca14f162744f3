"""A room-API read of a compliance report is appended to the recorded session's access log,
signed by the server and naming the token's identity and role."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from finrtc.archive import access_log
from finrtc.archive.records import open_record
from finrtc.archive.settings import ArchiveConfig
from finrtc.archive.storage import LocalStorage
from finrtc.archive.targets import StorageTargets
from finrtc.auth import Grant
from finrtc.model import Role
from finrtc.services import ArchiveAccess
from finrtc.signaling.compliance_api import compliance_routes
from tests.archive.conftest import ROOM, make_keys, record_sync


async def test_a_report_read_is_logged(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    session = await asyncio.to_thread(record_sync, keys, tmp_path / "archive", "s-read", 2.0)
    storage = LocalStorage(tmp_path / "archive", durable=False)
    access = ArchiveAccess(StorageTargets(ArchiveConfig(directory=str(tmp_path / "archive")), tmp_path),
                           keys.signer)
    access.session_started(ROOM, f"{ROOM}/s-read", storage)

    def authorize(request: web.Request, room: str) -> Grant:
        # The real token check is covered by the authorization matrix; here: who reads.
        return Grant(identity=request.headers["X-Who"], room=room, role=Role.OBSERVER,
                     can_publish=False, can_subscribe=True)

    app = web.Application()
    app.add_routes(compliance_routes(lambda room: {"room": room, "passed": True}, authorize,
                                     audit=access.report_read))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            for who in ("compliance-officer-1", "supervisor-2"):
                async with http.get(f"http://127.0.0.1:{port}/v1/rooms/{ROOM}/compliance",
                                    headers={"X-Who": who}) as response:
                    assert response.status == 200
            # A room without a recorded session is not logged anywhere.
            async with http.get(f"http://127.0.0.1:{port}/v1/rooms/other/compliance",
                                headers={"X-Who": "x"}) as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    manifest = open_record((session / "manifest.json").read_bytes(), keys.verify_key)
    report = access_log.check(LocalStorage(tmp_path / "archive"), f"{ROOM}/s-read", manifest)
    assert report.holds
    assert [(e["action"], e["detail"]["identity"], e["detail"]["role"])
            for e in report.entries] == [("report_read", "compliance-officer-1", "observer"),
                                         ("report_read", "supervisor-2", "observer")]
    assert all(e["actor"]["key"] == keys.signer.fingerprint for e in report.entries)
