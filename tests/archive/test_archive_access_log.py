"""The access trail: every verify, export (with its reason), legal hold and purge of a session is
a signed, hash-chained entry; `finrtc archive access-log` prints it and `verify` checks it."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from finrtc.archive.access_log import entry_name
from finrtc.archive.keys import Signer, generate_keys
from finrtc.archive.records import seal_record

from .conftest import Keys, record_sync, run_cli, verify_args


def access_log(keys: Keys, session: Path, capsys: pytest.CaptureFixture[str]
               ) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = run_cli(["archive", "access-log", str(session), "--signer-key",
                    str(keys.paths.signer_pub), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_every_access_is_signed_and_chained(keys: Keys, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    session = record_sync(keys, tmp_path / "archive", "s-log", 3.0)
    auditor = generate_keys(tmp_path / "auditor")
    actor = ["--actor-key", str(auditor.signer_key), "--actor", "auditor jane"]
    assert run_cli(verify_args(keys, session, *actor)) == 0
    with pytest.raises(SystemExit):  # export needs a reason
        run_cli(["export", str(session), "--signer-key", str(keys.paths.signer_pub),
                 "--archive-key", str(keys.paths.archive_key), "--out", str(tmp_path / "x.webm")])
    assert run_cli(["export", str(session), "--reason", "FINRA request 2026-17", *actor,
                    "--signer-key", str(keys.paths.signer_pub), "--archive-key",
                    str(keys.paths.archive_key), "--out", str(tmp_path / "call.webm"),
                    "--quiet"]) == 0
    assert run_cli(["archive", "legal-hold", str(session), "--on", "--reason", "case 42",
                    "--signer-key", str(keys.paths.signer_key)]) == 0
    assert run_cli(verify_args(keys, session, content=False)) == 0  # no key: unattributed
    code, log = access_log(keys, session, capsys)
    assert code == 0 and log["holds"], log
    entries = log["entries"]
    assert [e["action"] for e in entries] == ["verify", "export", "legal_hold_on", "verify"]
    assert entries[0]["actor"]["name"] == "auditor jane"
    assert entries[0]["actor"]["key"] == Signer.from_file(auditor.signer_key).fingerprint
    assert entries[0]["detail"]["result"] == "valid"
    assert entries[1]["reason"] == "FINRA request 2026-17"
    assert entries[1]["detail"]["out"] == "call.webm"
    assert entries[2]["actor"]["key"] == keys.signer.fingerprint
    assert entries[2]["reason"] == "case 42"
    assert entries[3]["actor"]["key"] is None  # an anonymous verify is logged, unattributed
    # verify checks the log's chain too.
    capsys.readouterr()
    assert run_cli(verify_args(keys, session)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["access_log"]["holds"] and len(report["access_log"]["entries"]) == 4
    # The text form names who did what and why.
    assert run_cli(["archive", "access-log", str(session), "--signer-key",
                    str(keys.paths.signer_pub)]) == 0
    text = capsys.readouterr().out
    assert "auditor jane" in text and "FINRA request 2026-17" in text and "chain holds" in text


def _writable(path: Path) -> Path:
    path.chmod(0o640)
    return path


def test_a_rewritten_or_removed_entry_breaks_the_chain(keys: Keys, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    session = record_sync(keys, tmp_path / "archive", "s-log-tamper", 2.0)
    for reason in ("first", "second", "third"):
        assert run_cli(["export", str(session), "--reason", reason, "--signer-key",
                        str(keys.paths.signer_pub), "--archive-key", str(keys.paths.archive_key),
                        "--out", str(tmp_path / f"{reason}.webm"), "--quiet"]) == 0
    # An insider changes entry 1's reason and signs it with the server's key as its actor.
    path = _writable(session / entry_name(1))
    original = path.read_bytes()
    body = json.loads(original)["body"]
    body["reason"] = "routine"
    path.write_bytes(seal_record(body, keys.signer))
    code, log = access_log(keys, session, capsys)
    assert code == 1
    assert [(p["seq"], p["code"]) for p in log["problems"]] == [
        (1, "access_entry_invalid"), (2, "access_chain_broken")]
    body["actor"]["public_key"] = base64.b64encode(keys.signer.public_key).decode()
    body["actor"]["key"] = keys.signer.fingerprint
    path.write_bytes(seal_record(body, keys.signer))
    code, log = access_log(keys, session, capsys)
    assert code == 1
    assert [(p["seq"], p["code"]) for p in log["problems"]] == [(2, "access_chain_broken")]
    capsys.readouterr()
    assert run_cli(verify_args(keys, session)) == 1
    report = json.loads(capsys.readouterr().out)
    assert "access_chain_broken" in {f["code"] for f in report["findings"]}

    # Removing an entry from the middle is seen too.
    other = record_sync(keys, tmp_path / "archive", "s-log-cut", 2.0)
    for reason in ("a", "b", "c"):
        assert run_cli(["export", str(other), "--reason", reason, "--signer-key",
                        str(keys.paths.signer_pub), "--archive-key", str(keys.paths.archive_key),
                        "--out", str(tmp_path / f"o-{reason}.webm"), "--quiet"]) == 0
    _writable(other / entry_name(1)).unlink()
    code, log = access_log(keys, other, capsys)
    assert code == 1 and "access_entry_missing" in {p["code"] for p in log["problems"]}


def test_purge_is_logged(keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "archive"
    session = record_sync(keys, archive, "s-log-purge", 2.0)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    assert run_cli(["archive", "purge", "--archive-dir", str(archive), "--signer-key",
                    str(keys.paths.signer_key), "--as-of", later]) == 0
    code, log = access_log(keys, session, capsys)
    assert code == 0 and [e["action"] for e in log["entries"]] == ["purge"]
    assert log["entries"][0]["reason"] == "retention period ended"
