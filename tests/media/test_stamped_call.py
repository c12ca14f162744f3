"""A real call through the server with trusted timestamps: a TSA outage mid-call is a room alert,
never a media stop, and `finrtc verify --tsa-cert` accepts the session with its late stamps."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from finrtc.archive.keys import Signer, generate_keys
from finrtc.signaling.context import ROOMS
from tests.conftest import make_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack
from tests.support.tsa import POLICY_OID, TsaProcess, make_tsa_pki

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


async def test_a_call_with_a_tsa_outage_is_stamped_late_and_verifies(tmp_path: Path, http) -> None:
    pki = make_tsa_pki(tmp_path / "tsa", "Call TSA")
    tsa = TsaProcess(pki)
    await asyncio.to_thread(tsa.start)
    keys = generate_keys(tmp_path / "keys")
    loaded = make_loaded(
        tmp_path,
        compliance={"enabled": False},
        archive={
            "enabled": True, "directory": str(tmp_path / "archive"), "segment_seconds": 1.0,
            "signer_key_file": str(keys.signer_key),
            "archive_public_key_files": [str(keys.archive_pub)],
            "timestamping": {"enabled": True, "url": tsa.url, "ca_file": str(pki.ca_cert),
                             "policy_oid": POLICY_OID, "retry_max_s": 0.5},
        },
    )
    running = await start_server(loaded)
    room = "stamped"
    try:
        agent = await client.publish(http, running.base, room, token(room, "agent1"),
                                     [PatternVideoTrack(160, 120), ToneAudioTrack()])
        live = running.app[ROOMS].get(room)
        session_id = live.session.session_id
        await asyncio.sleep(2.0)
        await asyncio.to_thread(tsa.stop)
        await wait_for(lambda: any(e.type == "timestamping_degraded"
                                   for e in live.events.history()), 10)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(tsa.start)
        await wait_for(lambda: any(e.type == "timestamping_restored"
                                   for e in live.events.history()), 10)
        degraded = next(e for e in live.events.history() if e.type == "timestamping_degraded")
        assert degraded.severity.value == "alert" and degraded.data["tsa"] == tsa.url
        await asyncio.sleep(1.5)
        assert await client.delete(http, running.base, agent) == 200
        await client.close(agent)
        await wait_for(lambda: room not in running.app[ROOMS].rooms, 20)
    finally:
        await running.runner.cleanup()
        await asyncio.to_thread(tsa.stop)

    session = tmp_path / "archive" / room / session_id
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "finrtc", "verify", str(session), "--signer-key",
         str(keys.signer_pub), "--tsa-cert", str(pki.ca_cert), "--tsa-policy", POLICY_OID,
         "--stamp-late-after", "1", "--json", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    stamps = report["timestamps"]
    assert stamps["stamped_late"], stamps["counts"]
    assert stamps["counts"].get("invalid", 0) == 0 and stamps["counts"].get("missing", 0) == 0
    codes = [f["code"] for f in report["findings"]]
    # The room alert was sealed into the chain through the archive's room-event listener.
    assert "event:timestamping_degraded" in codes and "event:timestamping_restored" in codes
    final = json.loads((session / "final.json").read_text())["body"]
    assert final["timestamping"]["degraded"] is True


async def test_a_witness_sees_a_rewrite_and_a_truncation(tmp_path: Path, http) -> None:
    from aiohttp import web

    from tests.archive.test_archive_timestamps import copy_session, drop_events, resign_from

    received: list[bytes] = []

    async def store(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    witness_app = web.Application()
    witness_app.router.add_post("/witness", store)
    runner = web.AppRunner(witness_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    witness_url = f"http://127.0.0.1:{runner.addresses[0][1]}/witness"
    keys = generate_keys(tmp_path / "keys")
    loaded = make_loaded(
        tmp_path,
        compliance={"enabled": False},
        archive={
            "enabled": True, "directory": str(tmp_path / "archive"), "segment_seconds": 1.0,
            "signer_key_file": str(keys.signer_key),
            "archive_public_key_files": [str(keys.archive_pub)], "witness": True,
        },
        webhooks={"endpoints": [{"url": witness_url, "name": "witness",
                                 "secret": "witness-" + "w" * 40,
                                 "events": ["archive_chain_head"]}]},
    )
    running = await start_server(loaded)
    room = "witnessed"
    try:
        agent = await client.publish(http, running.base, room, token(room, "agent1"),
                                     [PatternVideoTrack(160, 120)])
        session_id = running.app[ROOMS].get(room).session.session_id
        await asyncio.sleep(3.5)
        assert await client.delete(http, running.base, agent) == 200
        await client.close(agent)
        await wait_for(lambda: room not in running.app[ROOMS].rooms, 20)
        await wait_for(lambda: any(b'"final.json"' in body for body in received), 10)
    finally:
        await running.runner.cleanup()
        await runner.cleanup()
    witness_file = tmp_path / "witness.jsonl"
    witness_file.write_bytes(b"\n".join(received) + b"\n")
    session = tmp_path / "archive" / room / session_id

    def verify(folder: Path) -> tuple[int, dict]:
        result = subprocess.run(
            [sys.executable, "-m", "finrtc", "verify", str(folder), "--signer-key",
             str(keys.signer_pub), "--witness", str(witness_file), "--json", "--quiet"],
            capture_output=True, text=True, timeout=120,
        )
        return result.returncode, json.loads(result.stdout)

    code, report = await asyncio.to_thread(verify, session)
    assert code == 0, report["findings"]
    records = len(list((session / "records").glob("*.json")))
    assert report["witness"]["matched"] == records + 2 and not report["witness"]["unwitnessed"]
    # An insider rewrite with the server's own key: the chain holds, the witness does not.
    insider = SimpleNamespace(signer=Signer.from_file(keys.signer_key))
    rewritten = copy_session(session, tmp_path / "rewritten")
    resign_from(rewritten, insider, 1, drop_events)  # type: ignore[arg-type]
    code, report = await asyncio.to_thread(verify, rewritten)
    assert code == 1 and "witness_mismatch" in {f["code"] for f in report["findings"]}
    # Truncation dressed up as a crash (final record and last segment removed): exit 2 alone,
    # but the witness saw them.
    cut = copy_session(session, tmp_path / "cut")
    (cut / "final.json").unlink()
    last = sorted((cut / "records").glob("*.json"))[-1]
    last.unlink()
    (cut / "segments" / last.name.replace(".json", ".seg")).unlink()
    code, report = await asyncio.to_thread(verify, cut)
    assert code == 1
    missing = [f["message"] for f in report["findings"] if f["code"] == "witness_record_missing"]
    assert any(m.startswith("final.json") for m in missing) and any(
        m.startswith(f"records/{last.name}") for m in missing)
