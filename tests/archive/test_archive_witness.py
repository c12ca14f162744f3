"""The archive witness: chain heads leave the server as signed webhooks the moment they are
sealed, and `finrtc verify --witness` catches a session the server re-signed afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from finrtc.archive.keys import Signer
from finrtc.archive.records import seal_record
from finrtc.webhooks.signing import verify_signature
from tests.api.conftest import API_KEY, API_KEY_SECRET
from tests.api.test_api_recording import record_call
from tests.archive.test_archive_residency import _verify
from tests.conftest import TEST_SECRET, archive_loaded, start_server
from tests.ops.test_ops_webhooks import receiver_factory  # noqa: F401  (fixture)


async def test_witnessed_heads_catch_an_insider_re_sign(
    tmp_path: Path, http: aiohttp.ClientSession, receiver_factory: Any  # noqa: F811
) -> None:
    receiver = await receiver_factory()
    keys, loaded = archive_loaded(
        tmp_path, auth={"api_keys": {API_KEY: API_KEY_SECRET}},
        webhooks={"witness": {"url": receiver.url}, "initial_backoff_s": 0.05},
    )
    server = await start_server(loaded)
    room = "witnessed"
    try:
        session_id = await record_call(http, server.base, room, 2.5)
        session = tmp_path / "archive" / room / session_id
        sealed = 2 + len(list((session / "records").glob("*.json")))  # manifest + records + final
        await receiver.wait_for(sealed, within_s=20)
    finally:
        await server.runner.cleanup()
    # Every head arrived signed like any finrtc webhook, and only chain heads went there.
    assert all(verify_signature(TEST_SECRET, r.headers, r.body) for r in receiver.requests)
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert {b["type"] for b in bodies} == {"archive.chain_head"}
    assert {b["data"]["record"] for b in bodies} >= {"manifest.json", "final.json", "records/000000.json"}
    heads = tmp_path / "heads.jsonl"
    heads.write_text("".join(r.body.decode() + "\n" for r in receiver.requests))

    code, report = await _verify(session, keys, "--witness", str(heads))
    assert code == 0, report
    assert report["witness"] == {"heads": sealed, "matched": sealed, "not_witnessed": 0}

    # The insider holds the signing key: rewrites the final record's verdict and re-signs it.
    final_path = session / "final.json"
    body = json.loads(final_path.read_text())["body"]
    body["end_reason"] = "session ended (no issues)"
    final_path.write_bytes(seal_record(body, Signer.from_file(keys.signer_key)))
    code, report = await _verify(session, keys)
    assert code == 0, "without the witness the re-signed session looks sound"
    code, report = await _verify(session, keys, "--witness", str(heads))
    assert code == 1, report
    (finding,) = [f for f in report["findings"] if f["code"] == "witness_mismatch"]
    assert "final.json" in finding["message"]

    # A witness that missed some heads (it was down) is reported, not trusted blindly.
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(line + "\n" for line in heads.read_text().splitlines()[2:]))
    code, report = await _verify(session, keys, "--witness", str(partial))
    assert any(f["code"] == "not_witnessed" for f in report["findings"]), report
