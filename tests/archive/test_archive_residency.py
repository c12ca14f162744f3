"""Data residency: a room's sessions are stored only in its residency's target, or refused."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.storage import LocalStorage
from finrtc.archive.targets import ResidencyError
from finrtc.config import parse_config
from finrtc.errors import ConfigError
from tests.api.conftest import API_KEY, API_KEY_SECRET, basic
from tests.api.test_api_recording import record_call
from tests.conftest import archive_loaded, start_server

from .conftest import ROOM, Keys, archive_config, run_cli, verify_args


async def _verify(session: Path, keys: Any, *extra: str) -> tuple[int, dict[str, Any]]:
    """`finrtc verify --json` in a child process, as an auditor runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "finrtc", "verify", str(session), "--signer-key", str(keys.signer_pub),
        "--json", "--quiet", *extra, stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, json.loads(stdout)


async def test_a_room_records_only_into_its_residency(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    keys, loaded = archive_loaded(
        tmp_path,
        {"region": "eu-de", "targets": {"cn-mainland": {"directory": str(tmp_path / "archive-cn")}}},
        auth={"api_keys": {API_KEY: API_KEY_SECRET}},
    )
    server = await start_server(loaded)
    try:
        async with http.post(server.base + "/v1/rooms", headers=basic(),
                             json={"name": "sh-branch", "policy": {"residency": "cn-mainland"}}) as response:
            assert response.status == 201, await response.text()
        # No target for this residency: refused up front, with the residencies there are.
        async with http.post(server.base + "/v1/rooms", headers=basic(),
                             json={"name": "ny-branch", "policy": {"residency": "us-east"}}) as response:
            assert response.status == 400
            error = await response.json()
        assert "us-east" in error["error"]["message"] and "cn-mainland, eu-de" in error["error"]["message"]
        session_id = await record_call(http, server.base, "sh-branch", 1.5)
    finally:
        await server.runner.cleanup()
    assert not (tmp_path / "archive" / "sh-branch").exists(), "stored outside its residency"
    session = tmp_path / "archive-cn" / "sh-branch" / session_id
    code, report = await _verify(session, keys)
    assert code == 0, report
    assert report["residency"] == "cn-mainland"
    assert report["storage_target"] == {"name": "cn-mainland", "location": str(tmp_path / "archive-cn")}


def test_a_default_residency_without_a_target_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rooms.default_policy.residency 'eu' has no archive target"):
        parse_config({"data_dir": str(tmp_path), "rooms": {"default_policy": {"residency": "eu"}}})
    # Not recorded: the tag is only a label, nothing is stored anywhere.
    parse_config({"data_dir": str(tmp_path),
                  "rooms": {"default_policy": {"residency": "eu", "recording": False}}})


def test_the_recorder_refuses_a_residency_without_a_target(keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(ResidencyError, match="stored outside its residency"):
        SessionRecorder.create(
            archive_config(), tmp_path, ROOM, "s1", "default", "us-east", keys.signer,
            [keys.archive_public], storage=LocalStorage(tmp_path / "archive"),
        )
    assert not (tmp_path / "archive").exists()


def test_verify_fails_a_session_written_outside_its_residency(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = LocalStorage(tmp_path / "archive")
    recorder = SessionRecorder(
        config=archive_config(), storage=storage, room=ROOM, session_id="moved",
        retention_class="default", retention_days=1, residency="cn-mainland", signer=keys.signer,
        archive_public_keys=[keys.archive_public], storage_target="eu",
    )
    asyncio.run(recorder.start())
    asyncio.run(recorder.close())
    assert run_cli(verify_args(keys, tmp_path / "archive" / ROOM / "moved")) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(f["code"] == "residency_mismatch" for f in report["findings"]), report
