"""RFC 3161 trusted timestamps against a real TSA (`openssl ts -reply` behind HTTP on 127.0.0.1).

Cases: a stamped session verifies; an insider who re-signs a session with the server's own key
fails `verify --tsa-cert` (old tokens do not match, fresh tokens carry the wrong time); a TSA
outage mid-call gives late stamps that verify reports record by record; tokens of another TSA
fail; a TSA that never answers does not stop media, and the missing tokens are reported.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finrtc.archive.layout import FINAL, MANIFEST, record_name
from finrtc.archive.merkle import merkle_root, record_leaf
from finrtc.archive.records import record_digest, seal_record
from finrtc.archive.settings import TimestampingConfig
from finrtc.archive.stamper import SessionStamps, TimestampService, attach
from finrtc.archive.storage import LocalStorage
from finrtc.archive.timestamping import (
    TimestampError,
    build_request,
    check_token,
    load_tsa_certificates,
    new_nonce,
    token_from_response,
    token_name,
)
from finrtc.config import parse_config
from finrtc.errors import ConfigError
from finrtc.model import EncodedPacket
from tests.support.tsa import OTHER_POLICY_OID, POLICY_OID, TsaPki, TsaProcess, make_tsa_pki, run_tsa

from .conftest import Keys, av_call, make_keys, new_recorder, run_cli, verify_args

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def tsa_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TsaPki, TsaProcess]]:
    pki = make_tsa_pki(tmp_path_factory.mktemp("tsa-a"), "TSA A")
    with run_tsa(pki) as process:
        yield pki, process


@pytest.fixture(scope="module")
def tsa_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TsaPki, TsaProcess]]:
    pki = make_tsa_pki(tmp_path_factory.mktemp("tsa-b"), "TSA B")
    with run_tsa(pki) as process:
        yield pki, process


def service_for(url: str, pki: TsaPki, **extra: Any) -> TimestampService:
    config = TimestampingConfig(enabled=True, url=url, ca_file=str(pki.ca_cert),
                                **{"retry_max_s": 1.0, "close_wait_s": 20.0, **extra})
    service = TimestampService(config, load_tsa_certificates(pki.ca_cert))
    service.start()
    return service


def record_stamped(keys: Keys, archive: Path, session: str, seconds: float,
                   service: TimestampService, *, realtime: bool = False,
                   at: dict[float, Any] | None = None, close: bool = True,
                   ) -> tuple[Path, SessionStamps]:
    """Record a synthetic call whose records `service` stamps; `realtime` paces packets to the
    wall clock (sealing times then match media time), `at` runs callbacks at media times."""
    call = av_call()
    recorder = new_recorder(keys, LocalStorage(archive, durable=False), session, call=call)
    stamps = attach(service, recorder)
    asyncio.run(recorder.start())
    pending = sorted((at or {}).items())
    started = time.monotonic()
    packet: EncodedPacket
    for packet in call.packets(seconds):
        if realtime:
            time.sleep(max(0.0, packet.media_time - (time.monotonic() - started)))
        while pending and packet.media_time >= pending[0][0]:
            pending.pop(0)[1]()
        recorder.offer(packet)
    if close:
        asyncio.run(recorder.close())
    else:  # a crash: what was sealed stays, the rest never comes
        while recorder.backlog:
            time.sleep(0.01)
        time.sleep(0.3)
    stamps.wait_sync()
    return archive / "room-1" / session, stamps


def verify_json(keys: Keys, session: Path, *extra: str, content: bool = False
                ) -> tuple[int, dict[str, Any]]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run_cli(verify_args(keys, session, *extra, content=content))
    return code, json.loads(buffer.getvalue())


def codes(report: dict[str, Any], severity: str = "error") -> list[str]:
    return [f["code"] for f in report["findings"] if f["severity"] == severity]


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory, tsa_a: tuple[TsaPki, TsaProcess]
            ) -> tuple[Keys, Path, TsaPki]:
    base = tmp_path_factory.mktemp("stamped")
    keys = make_keys(base / "keys")
    pki, process = tsa_a
    service = service_for(process.url, pki)
    try:
        session, stamps = record_stamped(keys, base / "archive", "s-stamped", 4.0, service)
    finally:
        service.close()
    assert stamps.pending == [] and not stamps.degraded
    return keys, session, pki


def copy_session(session: Path, target: Path) -> Path:
    copy = Path(shutil.copytree(session, target / session.name))
    for path in copy.rglob("*"):
        if path.is_file():
            path.chmod(0o640)
    return copy


# ------------------------------------------------------------------------------ stamped


def test_a_stamped_session_verifies(stamped: tuple[Keys, Path, TsaPki]) -> None:
    keys, session, pki = stamped
    records = sorted((session / "records").glob("*.json"))
    tokens = sorted((session / "timestamps" / "records").glob("*.tst"))
    assert len(tokens) == len(records) >= 4
    assert (session / "timestamps" / "manifest.tst").is_file()
    assert (session / "timestamps" / "final.tst").is_file()
    for cert in (pki.ca_cert, pki.tsa_cert):  # the CA or the TSA certificate itself
        code, report = verify_json(keys, session, "--tsa-cert", str(cert), "--tsa-policy",
                                   POLICY_OID, content=True)
        assert code == 0, report["findings"]
        stamps = report["timestamps"]
        assert stamps["counts"] == {"stamped": len(records) + 2}
        assert stamps["tsa"] == ["CN=TSA A,O=finrtc tests"]
        assert all(r["delay_s"] is not None and abs(r["delay_s"]) < 5 for r in stamps["records"])
    manifest = json.loads((session / MANIFEST).read_text())["body"]
    assert manifest["timestamping"]["mode"] == "every_segment"
    final = json.loads((session / FINAL).read_text())["body"]
    assert final["timestamping"]["degraded"] is False
    assert final["timestamping"]["outages"] == 0 and final["timestamping"]["stamped_late"] == []
    # Without --tsa-cert the tokens are not looked at.
    code, report = verify_json(keys, session)
    assert code == 0 and report["timestamps"] is None


def test_a_wrong_policy_or_a_damaged_token_is_invalid(stamped: tuple[Keys, Path, TsaPki],
                                                      tmp_path: Path) -> None:
    keys, original, pki = stamped
    session = copy_session(original, tmp_path)
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert), "--tsa-policy",
                               OTHER_POLICY_OID)
    assert code == 1 and set(codes(report)) == {"timestamp_policy_mismatch"}
    token = session / token_name(record_name(1))
    data = bytearray(token.read_bytes())
    digest = json.loads((session / record_name(1)).read_text())["body"]
    position = data.find(bytes.fromhex(record_digest(digest)))
    assert position > 0
    data[position + 40] ^= 0x01  # inside the TSTInfo, after the imprint: genTime / serial
    token.write_bytes(bytes(data))
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert))
    assert code == 1
    bad = [f for f in report["findings"] if f["severity"] == "error"]
    assert [f["segment"] for f in bad] == [1]
    assert bad[0]["code"] in ("timestamp_token_content_altered", "timestamp_token_malformed")
    assert "records/000001.json" in bad[0]["message"]


# ------------------------------------------------------------------------------ insider


def resign_from(session: Path, keys: Keys, first: int, change: Any) -> None:
    """What an insider with signer.key does: alter record `first`, re-sign it and every later
    record (re-linked) and the final record, keeping every original time."""
    records = sorted((session / "records").glob("*.json"))
    prev = json.loads((session / record_name(first)).read_text())["body"]["prev"]
    digests = [record_digest(json.loads(path.read_text())["body"]) for path in records[:first]]
    for index in range(first, len(records)):
        path = session / record_name(index)
        body = json.loads(path.read_text())["body"]
        if index == first:
            change(body)
        body["prev"] = prev
        path.write_bytes(seal_record(body, keys.signer))
        prev = record_digest(body)
        digests.append(prev)
    final_path = session / FINAL
    final = json.loads(final_path.read_text())["body"]
    final["prev"] = prev
    final["records_root"] = merkle_root([record_leaf(d) for d in digests])
    final_path.write_bytes(seal_record(final, keys.signer))


def drop_events(body: dict[str, Any]) -> None:
    body["events"] = [{"type": "stage_reached", "media_time": body["media_start"],
                       "severity": "info", "data": {"stage": "risk_disclosure"},
                       "wall_clock": 0.0}]


def restamp(session: Path, url: str, names: list[str]) -> None:
    """The insider asks the real TSA for fresh tokens over the rewritten records."""
    for name in names:
        digest = bytes.fromhex(record_digest(json.loads((session / name).read_text())["body"]))
        nonce = new_nonce()
        request = urllib.request.Request(url, data=build_request(digest, None, nonce),
                                         headers={"Content-Type": "application/timestamp-query"})
        with urllib.request.urlopen(request, timeout=10) as response:
            token = token_from_response(response.read(), digest, nonce)
        (session / token_name(name)).write_bytes(token)


def test_an_insider_resign_with_the_server_key_fails(stamped: tuple[Keys, Path, TsaPki],
                                                     tsa_a: tuple[TsaPki, TsaProcess],
                                                     tmp_path: Path) -> None:
    keys, original, pki = stamped
    session = copy_session(original, tmp_path / "a")
    resign_from(session, keys, 2, drop_events)
    # The chain alone cannot tell: every signature and link holds with the server's key.
    code, report = verify_json(keys, session, content=True)
    assert code == 0, report["findings"]
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert), content=True)
    assert code == 1
    bad = {f["message"].split(":")[0]: f["code"] for f in report["findings"]
           if f["severity"] == "error"}
    count = len(list((session / "records").glob("*.json")))
    expected = [record_name(i) for i in range(2, count)] + [FINAL]
    assert sorted(bad) == sorted(expected)
    assert set(bad.values()) == {"timestamp_imprint_mismatch"}
    assert report["timestamps"]["counts"]["stamped"] == 3  # manifest, records 0 and 1

    # Fresh tokens over the forged records carry the time of the forgery.
    time.sleep(3.0)
    forged = copy_session(original, tmp_path / "b")
    resign_from(forged, keys, 2, drop_events)
    for name in expected:
        (forged / token_name(name)).unlink()
    restamp(forged, tsa_a[1].url, expected)
    code, report = verify_json(keys, forged, "--tsa-cert", str(pki.ca_cert),
                               "--max-stamp-delay", "2")
    assert code == 1
    too_late = [f for f in report["findings"] if f["code"] == "timestamp_too_late"]
    assert sorted(f["message"].split(":")[0] for f in too_late) == sorted(expected)
    assert "after sealing" in too_late[0]["message"]


# ------------------------------------------------------------------------------ other TSA


def test_tokens_from_another_tsa_fail(stamped: tuple[Keys, Path, TsaPki],
                                      tsa_b: tuple[TsaPki, TsaProcess], tmp_path: Path) -> None:
    keys, original, pki_a = stamped
    pki_b, process_b = tsa_b
    session = copy_session(original, tmp_path)
    # Record 1's token replaced by a genuine token of TSA B over the same digest.
    (session / token_name(record_name(1))).unlink()
    restamp(session, process_b.url, [record_name(1)])
    code, report = verify_json(keys, session, "--tsa-cert", str(pki_a.ca_cert))
    assert code == 1
    bad = [f for f in report["findings"] if f["severity"] == "error"]
    assert [(f["code"], f["segment"]) for f in bad] == [("timestamp_signer_untrusted", 1)]
    assert "another TSA" in bad[0]["message"] and "records/000001.json" in bad[0]["message"]
    # Against B's certificate only that one token holds.
    code, report = verify_json(keys, session, "--tsa-cert", str(pki_b.tsa_cert))
    counts = report["timestamps"]["counts"]
    assert code == 1 and counts.get("stamped", 0) + counts.get("stamped_late", 0) == 1


def test_the_checker_refuses_a_token_for_another_digest(stamped: tuple[Keys, Path, TsaPki]
                                                        ) -> None:
    _keys, session, pki = stamped
    token = (session / token_name(record_name(0))).read_bytes()
    trusted = load_tsa_certificates(pki.ca_cert)
    own = record_digest(json.loads((session / record_name(0)).read_text())["body"])
    assert check_token(token, bytes.fromhex(own), trusted).tsa == "CN=TSA A,O=finrtc tests"
    with pytest.raises(TimestampError) as error:
        check_token(token, bytes.fromhex(record_digest({"other": 1})), trusted)
    assert error.value.code == "imprint_mismatch"


# ------------------------------------------------------------------------------ outage


def test_a_tsa_outage_mid_call_gives_late_stamps_that_verify_reports(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    pki = make_tsa_pki(tmp_path / "tsa", "TSA A")
    process = TsaProcess(pki)
    process.start()
    service = service_for(process.url, pki)
    restarted = threading.Event()

    def restart() -> None:
        process.start()
        restarted.set()

    try:
        session, stamps = record_stamped(
            keys, tmp_path / "archive", "s-outage", 16.0, service, realtime=True,
            at={3.0: process.stop, 13.0: lambda: threading.Thread(target=restart).start()},
        )
    finally:
        service.close()
        restarted.wait(20)
        process.stop()
    assert stamps.pending == [] and stamps.degraded and stamps.outages == 1
    final = json.loads((session / FINAL).read_text())["body"]["timestamping"]
    assert final["degraded"] and final["outages"] == 1 and final["stamped_late"]

    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert),
                               "--stamp-late-after", "1", content=True)
    assert code == 0, codes(report)
    late = {item["record"]: item["late_by_s"] for item in report["timestamps"]["stamped_late"]}
    assert len(late) >= 5, late
    assert 7.0 <= max(late.values()) <= 14.0, late
    warnings = codes(report, "warning")
    assert "stamped_late" in warnings
    # The outage and the recovery are sealed into the chain itself.
    assert "event:timestamping_degraded" in warnings
    assert "event:timestamping_restored" in warnings
    events = [e["type"] for path in sorted((session / "records").glob("*.json"))
              for e in json.loads(path.read_text())["body"]["events"]]
    assert "timestamping_degraded" in events and "timestamping_restored" in events
    # A tighter tolerance than the outage: the records sealed early in it are not anchored.
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert),
                               "--max-stamp-delay", "5")
    assert code == 1 and "timestamp_too_late" in codes(report)


def test_a_tsa_that_never_answers_does_not_stop_media(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    pki = make_tsa_pki(tmp_path / "tsa", "TSA A")
    dead = TsaProcess(pki)  # never started: connections are refused
    service = service_for(dead.url, pki, close_wait_s=1.0)
    try:
        started = time.monotonic()
        session, stamps = record_stamped(keys, tmp_path / "archive", "s-dead", 3.0, service)
        assert time.monotonic() - started < 15
    finally:
        service.close()
    assert stamps.degraded and stamps.missing
    code, report = verify_json(keys, session, content=True)
    assert code == 0, report["findings"]  # every segment was sealed
    final = json.loads((session / FINAL).read_text())["body"]["timestamping"]
    assert final["degraded"] and record_name(0) in final["pending_at_final"]
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert))
    assert code == 1
    missing = [f["message"].split(":")[0] for f in report["findings"]
               if f["code"] == "timestamp_missing"]
    assert MANIFEST in missing and FINAL in missing and record_name(0) in missing


def test_every_n_mode_stamps_the_chain_head(tmp_path: Path,
                                            tsa_a: tuple[TsaPki, TsaProcess]) -> None:
    keys = make_keys(tmp_path / "keys")
    pki, process = tsa_a
    service = service_for(process.url, pki, mode="every_n", every_n=3)
    try:
        session, _stamps = record_stamped(keys, tmp_path / "archive", "s-every-n", 7.0, service)
    finally:
        service.close()
    tokens = sorted(p.name for p in (session / "timestamps" / "records").glob("*.tst"))
    assert tokens == ["000002.tst", "000005.tst"]
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert))
    assert code == 0, report["findings"]
    counts = report["timestamps"]["counts"]
    assert counts["stamped"] == 4 and counts["covered"] == report["timestamps"][
        "covered_by_design"] > 0
    assert "timestamp_missing_covered" not in codes(report, "warning")


# ------------------------------------------------------------------------------ config


def test_config_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="needs url"):
        parse_config({"archive": {"timestamping": {"enabled": True}}})
    with pytest.raises(ConfigError, match="needs ca_file"):
        parse_config({"archive": {"timestamping": {"enabled": True, "url": "http://t/"}}})
    with pytest.raises(ConfigError, match="http"):
        parse_config({"archive": {"timestamping": {"enabled": True, "url": "tsa.example",
                                                   "ca_file": "tsa.pem"}}})
    with pytest.raises(ConfigError, match="dotted OID"):
        parse_config({"archive": {"timestamping": {"enabled": True, "url": "http://t/",
                                                   "ca_file": "tsa.pem",
                                                   "policy_oid": "one.two"}}})
    with pytest.raises(ConfigError, match="ca_file"):
        TimestampService.from_config(
            TimestampingConfig(enabled=True, url="http://t/", ca_file="missing.pem"),
            lambda path: Path("/nonexistent") / path,
        )


def test_the_stamp_queue_is_bounded(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    pki = make_tsa_pki(tmp_path / "tsa", "TSA A")
    dead = TsaProcess(pki)
    service = service_for(dead.url, pki, queue_records=16, close_wait_s=0.5)
    try:
        session, stamps = record_stamped(keys, tmp_path / "archive", "s-full", 24.0, service)
    finally:
        service.close()
    dropped = {name for name, reason in stamps.missing.items() if "queue full" in reason}
    assert dropped and FINAL in dropped
    events = [e for path in sorted((session / "records").glob("*.json"))
              for e in json.loads(path.read_text())["body"]["events"]
              if e["type"] == "timestamping_degraded"]
    assert any("queue full" in e["data"]["reason"] for e in events)
    code, report = verify_json(keys, session, content=True)
    assert report["timestamps"] is None
    assert code == 0  # media complete: only the anchoring is missing


def test_config_check_reads_the_tsa_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    monkeypatch.setenv("FINRTC_API_SECRET", "api-" + "a" * 44)
    from finrtc import config_cli

    def check(ca_file: Path) -> int:
        path = tmp_path / "finrtc.yaml"
        path.write_text(
            f"data_dir: {tmp_path / 'data'}\ncompliance: {{enabled: false}}\n"
            f"archive:\n  timestamping:\n    enabled: true\n    url: http://127.0.0.1:9/tsa\n"
            f"    ca_file: {ca_file}\n"
        )
        parser = argparse.ArgumentParser(prog="finrtc")
        config_cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["config", "check", str(path)])
        result: int = args.handler(args)
        return result

    (tmp_path / "not-a-cert.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
    assert check(tmp_path / "not-a-cert.pem") == 2
    assert "archive.timestamping.ca_file" in capsys.readouterr().err
    pki = make_tsa_pki(tmp_path / "tsa", "TSA A")
    check(pki.ca_cert)
    assert "archive.timestamping" not in capsys.readouterr().err


def test_an_interrupted_session_reports_its_unanchored_tail(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    pki = make_tsa_pki(tmp_path / "tsa", "TSA A")
    process = TsaProcess(pki)
    process.start()
    service = service_for(process.url, pki, close_wait_s=0.5)
    try:
        session, _stamps = record_stamped(keys, tmp_path / "archive", "s-crash", 6.0, service,
                                          realtime=True, at={3.2: process.stop}, close=False)
    finally:
        service.close()
        process.stop()
    assert not (session / FINAL).exists()
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert))
    assert code == 2, codes(report)
    tail = [f["message"].split(":")[0] for f in report["findings"]
            if f["code"] == "timestamp_missing_after_interruption"]
    counts = report["timestamps"]["counts"]
    assert tail and counts["stamped"] >= 3 and counts["unanchored_tail"] == len(tail)
    # The tail is what came after the last token, in order.
    records = [r["record"] for r in report["timestamps"]["records"]]
    assert records[-len(tail):] == tail
    # A tail longer than the tolerance after the last token is not excused by the crash.
    code, report = verify_json(keys, session, "--tsa-cert", str(pki.ca_cert),
                               "--max-stamp-delay", "1.5")
    assert code == 1 and "timestamp_missing" in codes(report)


def test_a_clip_package_carries_its_tokens(stamped: tuple[Keys, Path, TsaPki],
                                           tmp_path: Path) -> None:
    keys, session, pki = stamped
    clip = tmp_path / "clip"
    assert run_cli(["export", str(session), "--segment", "1", "--out", str(clip), "--reason",
                    "clip for the regulator", "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(keys.paths.archive_key), "--quiet"]) == 0
    assert {p.name for p in clip.glob("*.tst")} == {"manifest.tst", "record.tst", "final.tst"}
    code, report = verify_json(keys, clip, "--tsa-cert", str(pki.ca_cert))
    assert code == 0, report["findings"]
    assert report["timestamps"]["counts"] == {"stamped": 3}
    # Another record's token in the clip is caught.
    (clip / "record.tst").write_bytes((session / token_name(record_name(0))).read_bytes())
    code, report = verify_json(keys, clip, "--tsa-cert", str(pki.ca_cert))
    assert code == 1 and "timestamp_imprint_mismatch" in codes(report)


def test_a_tsa_behind_an_issuing_ca_chains_to_the_root(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    pki = make_tsa_pki(tmp_path / "tsa", "Chained TSA", intermediate=True)
    with run_tsa(pki) as process:
        service = service_for(process.url, pki)
        try:
            session, stamps = record_stamped(keys, tmp_path / "archive", "s-chain", 2.0, service)
        finally:
            service.close()
    assert stamps.pending == [] and not stamps.degraded
    for anchor in (pki.ca_cert, pki.folder / "sub.crt", pki.tsa_cert):
        code, report = verify_json(keys, session, "--tsa-cert", str(anchor))
        assert code == 0, (anchor, report["findings"])
    other = make_tsa_pki(tmp_path / "other", "Other TSA")
    code, report = verify_json(keys, session, "--tsa-cert", str(other.ca_cert))
    assert code == 1 and set(codes(report)) == {"timestamp_signer_untrusted"}


def test_a_single_segment_check_includes_its_token(stamped: tuple[Keys, Path, TsaPki],
                                                   tmp_path: Path) -> None:
    keys, original, pki = stamped
    code, report = verify_json(keys, original, "--segment", "2", "--tsa-cert", str(pki.ca_cert))
    assert code == 0, report["findings"]
    assert [r["record"] for r in report["timestamps"]["records"]] == [
        MANIFEST, record_name(2), FINAL]
    session = copy_session(original, tmp_path)
    (session / token_name(record_name(2))).unlink()
    code, report = verify_json(keys, session, "--segment", "2", "--tsa-cert", str(pki.ca_cert))
    # The final token came within seconds of this short session's record 2: it anchors it.
    assert code == 0 and "timestamp_missing_covered" in codes(report, "warning")
    code, report = verify_json(keys, session, "--segment", "2", "--tsa-cert", str(pki.ca_cert),
                               "--max-stamp-delay", "0.001")
    assert code == 1 and "timestamp_missing" in codes(report)
