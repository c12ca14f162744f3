"""Retention: purge crypto-shreds sessions past retention (never those under legal hold) with a
signed destruction receipt; verify then states that the keys were destroyed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from finrtc.archive.records import open_record

from .conftest import ROOM, Keys, record_sync, run_cli, verify_args


def test_purge_legal_hold_and_verify_after(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    archive = tmp_path / "archive"
    expiring = record_sync(keys, archive, "expiring", 2.0)
    held = record_sync(keys, archive, "held", 2.0)
    kept = record_sync(keys, archive, "kept", 2.0, retention_class="long")
    signer_key = str(keys.paths.signer_key)

    assert run_cli(["archive", "legal-hold", str(held), "--on", "--reason", "case 2026-17",
                    "--signer-key", signer_key]) == 0
    capsys.readouterr()

    # Today nothing is due.
    assert run_cli(["archive", "purge", "--archive-dir", str(archive), "--signer-key",
                    signer_key, "--json"]) == 0
    outcomes = {o["session"]: o["action"] for o in json.loads(capsys.readouterr().out)}
    assert outcomes == {f"{ROOM}/expiring": "retained", f"{ROOM}/held": "legal_hold",
                        f"{ROOM}/kept": "retained"}

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    assert run_cli(["archive", "purge", "--archive-dir", str(archive), "--signer-key",
                    signer_key, "--as-of", later, "--dry-run", "--json"]) == 0
    outcomes = {o["session"]: o["action"] for o in json.loads(capsys.readouterr().out)}
    assert outcomes[f"{ROOM}/expiring"] == "would_purge"
    assert list((expiring / "keys").glob("*.sealed"))

    assert run_cli(["archive", "purge", "--archive-dir", str(archive), "--signer-key",
                    signer_key, "--as-of", later, "--json"]) == 0
    outcomes = {o["session"]: o["action"] for o in json.loads(capsys.readouterr().out)}
    assert outcomes == {f"{ROOM}/expiring": "purged", f"{ROOM}/held": "legal_hold",
                        f"{ROOM}/kept": "retained"}
    assert not list((expiring / "keys").glob("*.sealed"))
    assert list((held / "keys").glob("*.sealed"))
    assert list((kept / "keys").glob("*.sealed"))
    receipt = open_record((expiring / "destruction.json").read_bytes(), keys.verify_key)
    assert receipt["type"] == "destruction_receipt" and receipt["session_id"] == "expiring"
    assert len(receipt["destroyed_keys"]) == 1

    # Integrity still verifies; content cannot be checked, and the report says why.
    assert run_cli(verify_args(keys, expiring)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["keys_destroyed"]["destroyed_at"] == receipt["destroyed_at"]
    assert report["content_checked"] is False
    assert any(f["code"] == "content_not_checkable" for f in report["findings"])
    argv = [a for a in verify_args(keys, expiring) if a != "--json"]
    assert run_cli(argv) == 0
    assert "KEYS DESTROYED" in capsys.readouterr().out
    # Export is impossible by design.
    assert run_cli(["export", "--reason=test audit",
                    str(expiring), "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(keys.paths.archive_key), "--out",
                    str(tmp_path / "x.webm"), "--quiet"]) == 3
    assert "keys were destroyed" in capsys.readouterr().err

    # A second run is idempotent; lifting the hold lets the held session go.
    assert run_cli(["archive", "legal-hold", str(held), "--off", "--reason", "case closed",
                    "--signer-key", signer_key]) == 0
    assert run_cli(["archive", "purge", "--archive-dir", str(archive), "--signer-key",
                    signer_key, "--as-of", later, "--json"]) == 0
    outcomes = {o["session"]: o["action"] for o in
                json.loads(capsys.readouterr().out.split("\n", 1)[1])}
    assert outcomes[f"{ROOM}/expiring"] == "already_purged"
    assert outcomes[f"{ROOM}/held"] == "purged"
    assert len(list((held / "legal_hold_log").glob("*.json"))) == 2


def test_purge_removing_receipt_is_detected(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    archive = tmp_path / "archive"
    session = record_sync(keys, archive, "gone", 1.0)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    assert run_cli(["archive", "purge", "--archive-dir", str(archive), "--signer-key",
                    str(keys.paths.signer_key), "--as-of", later]) == 0
    (session / "destruction.json").unlink()
    capsys.readouterr()
    assert run_cli(verify_args(keys, session)) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(f["code"] == "sealed_key_missing" for f in report["findings"])


def test_purge_and_hold_from_config_file(tmp_path: Path, capsys: Any) -> None:
    from .conftest import make_keys

    data_dir = tmp_path / "data"
    keys = make_keys(data_dir / "keys")
    session = record_sync(keys, data_dir / "archive", "cfg", 1.0)
    config = tmp_path / "finrtc.yaml"
    config.write_text(f"data_dir: {data_dir}\narchive:\n  retention_classes:\n"
                      "    default: {days: 1}\n")
    assert run_cli(["archive", "legal-hold", f"{ROOM}/cfg", "--config", str(config), "--on",
                    "--reason", "audit"]) == 0
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    capsys.readouterr()
    assert run_cli(["archive", "purge", "--config", str(config), "--as-of", later,
                    "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["action"] == "legal_hold"
    assert run_cli(["archive", "legal-hold", f"{ROOM}/cfg", "--config", str(config), "--off",
                    "--reason", "audit closed"]) == 0
    capsys.readouterr()
    assert run_cli(["archive", "purge", "--config", str(config), "--as-of", later,
                    "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["action"] == "purged"
    assert (session / "destruction.json").is_file()
