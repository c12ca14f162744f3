"""S3 backend round trip against moto's stand-alone S3 server on 127.0.0.1 (never AWS).

What moto enforces (checked here): Object Lock retention refuses deleting a locked object
version and a legal hold refuses deleting the held version; `If-None-Match: *` refuses
overwriting an existing key. What it does not: shortening a COMPLIANCE retention date is
accepted by moto 5.x although AWS refuses it, so that is not asserted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finrtc.archive.export import export_session
from finrtc.archive.retention import place_legal_hold, purge
from finrtc.archive.settings import S3StorageConfig
from finrtc.archive.storage import S3Storage
from finrtc.archive.verify import verify_session
from finrtc.errors import ArchiveError

from .conftest import ROOM, Keys, av_call, new_recorder

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
BUCKET = "finrtc-archive-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def storage(s3_endpoint: str, request: pytest.FixtureRequest) -> S3Storage:
    raw = client(s3_endpoint)
    bucket = f"{BUCKET}-{abs(hash(request.node.name)) % 10**8}"
    raw.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    config = S3StorageConfig(bucket=bucket, endpoint_url=s3_endpoint, prefix="recordings",
                             access_key_id="testing", secret_access_key="testing",
                             object_lock_mode="COMPLIANCE")
    return S3Storage(config)


def record(keys: Keys, storage: S3Storage, session: str, seconds: float = 3.0) -> str:
    call = av_call()
    recorder = new_recorder(keys, storage, session, call=call)
    asyncio.run(recorder.start())
    for packet in call.packets(seconds):
        recorder.offer(packet)
    asyncio.run(recorder.close())
    return f"{ROOM}/{session}"


def test_s3_round_trip_with_object_lock(keys: Keys, storage: S3Storage, tmp_path: Path) -> None:
    prefix = record(keys, storage, "s3-one")
    report = verify_session(storage, prefix, keys.verify_key, keys.archive_private)
    assert report.exit_code == 0, report.summary()
    assert report.content_checked and report.segments_valid == 3

    raw = storage.client
    key = f"recordings/{prefix}/segments/000001.seg"
    head = raw.head_object(Bucket=storage.bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    # Sealed data keys are deliberately not locked (crypto-shredding must stay possible).
    sealed = [k for k in storage.list_keys(prefix) if k.endswith(".sealed")]
    assert "ObjectLockMode" not in raw.head_object(Bucket=storage.bucket,
                                                   Key=f"recordings/{sealed[0]}")

    # The backend never overwrites.
    with pytest.raises(ArchiveError, match="refusing to overwrite"):
        storage.put(f"{prefix}/segments/000001.seg", b"evil")
    # Deleting the locked version is refused by the store itself.
    version = head["VersionId"]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        raw.delete_object(Bucket=storage.bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # A raw overwrite only adds a version: verify catches it, the sealed version survives.
    original = raw.get_object(Bucket=storage.bucket, Key=key, VersionId=version)["Body"].read()
    raw.put_object(Bucket=storage.bucket, Key=key, Body=b"evil")
    report = verify_session(storage, prefix, keys.verify_key, keys.archive_private)
    assert report.exit_code == 1
    assert any(f.code == "ciphertext_mismatch" and f.segment == 1 for f in report.findings)
    kept = raw.get_object(Bucket=storage.bucket, Key=key, VersionId=version)["Body"].read()
    assert kept == original


def test_s3_export_legal_hold_and_purge(keys: Keys, storage: S3Storage, tmp_path: Path) -> None:
    held = record(keys, storage, "s3-held", 2.0)
    gone = record(keys, storage, "s3-gone", 2.0)
    result = export_session(storage, gone, keys.verify_key, keys.archive_private,
                            tmp_path / "gone.webm")
    assert result.segments == 2 and (tmp_path / "gone.webm").stat().st_size > 1000

    place_legal_hold(storage, held, keys.signer, "regulator inquiry")
    raw = storage.client
    status = raw.head_object(Bucket=storage.bucket,
                             Key=f"recordings/{held}/segments/000000.seg")
    assert status["ObjectLockLegalHoldStatus"] == "ON"

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    outcome = {o.session: o.action for o in purge(storage, keys.signer, now=later).outcomes}
    assert outcome == {held: "legal_hold", gone: "purged"}
    assert not [k for k in storage.list_keys(gone) if k.endswith(".sealed")]
    # No version of the sealed key survives, not even behind a delete marker.
    versions = raw.list_object_versions(Bucket=storage.bucket, Prefix=f"recordings/{gone}/keys/")
    assert not versions.get("Versions")
    report = verify_session(storage, gone, keys.verify_key, keys.archive_private)
    assert report.exit_code == 0 and report.keys_destroyed is not None
    assert not report.content_checked
    assert [k for k in storage.list_keys(held) if k.endswith(".sealed")]


def test_s3_cli_with_config(keys: Keys, storage: S3Storage, s3_endpoint: str, tmp_path: Path,
                            capsys: Any) -> None:
    import json

    from .conftest import run_cli

    prefix = record(keys, storage, "s3-cli", 2.0)
    config = tmp_path / "finrtc.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "archive:\n"
        f"  signer_key_file: {keys.paths.signer_key}\n"
        "  retention_classes: {default: {days: 1}}\n"
        "  storage:\n"
        "    backend: s3\n"
        "    s3:\n"
        f"      bucket: {storage.bucket}\n"
        f"      endpoint_url: {s3_endpoint}\n"
        "      prefix: recordings\n"
        "      access_key_id: testing\n"
        "      secret_access_key: testing\n"
    )
    assert run_cli(["verify", prefix, "--config", str(config), "--signer-key",
                    str(keys.paths.signer_pub), "--archive-key", str(keys.paths.archive_key),
                    "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["segments_valid"] == 2
    out = tmp_path / "s3.webm"
    assert run_cli(["export", "--reason=test audit",
                    prefix, "--config", str(config), "--signer-key",
                    str(keys.paths.signer_pub), "--archive-key", str(keys.paths.archive_key),
                    "--out", str(out), "--quiet"]) == 0
    assert out.stat().st_size > 1000
    capsys.readouterr()
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    assert run_cli(["archive", "purge", "--config", str(config), "--as-of", later,
                    "--json"]) == 0
    outcomes = json.loads(capsys.readouterr().out)
    assert [(o["session"], o["action"]) for o in outcomes] == [(prefix, "purged")]
    report = verify_session(storage, prefix, keys.verify_key, keys.archive_private)
    assert report.exit_code == 0 and report.keys_destroyed is not None
    # The access trail lives in the bucket too, locked like the records.
    assert report.access_log is not None and report.access_log["holds"]
    assert [e["action"] for e in report.access_log["entries"]] == ["verify", "export", "purge"]
    assert report.access_log["entries"][1]["reason"] == "test audit"
    head = storage.client.head_object(Bucket=storage.bucket,
                                      Key=f"recordings/{prefix}/access/000000.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_s3_timestamps_are_stored_locked_beside_the_records(keys: Keys, storage: S3Storage,
                                                             tmp_path: Path) -> None:
    from finrtc.archive.settings import TimestampingConfig
    from finrtc.archive.stamper import TimestampService, attach
    from finrtc.archive.timestamping import load_tsa_certificates
    from finrtc.archive.verify import VerifyOptions
    from finrtc.archive.verify_stamps import StampOptions
    from tests.support.tsa import make_tsa_pki, run_tsa

    pki = make_tsa_pki(tmp_path / "tsa", "S3 TSA")
    trusted = load_tsa_certificates(pki.ca_cert)
    with run_tsa(pki) as tsa:
        service = TimestampService(
            TimestampingConfig(enabled=True, url=tsa.url, ca_file=str(pki.ca_cert)), trusted)
        service.start()
        try:
            call = av_call()
            recorder = new_recorder(keys, storage, "s3-stamped", call=call)
            stamps = attach(service, recorder)
            asyncio.run(recorder.start())
            for packet in call.packets(2.0):
                recorder.offer(packet)
            asyncio.run(recorder.close())
            assert stamps.wait_sync() == []
        finally:
            service.close()
    prefix = f"{ROOM}/s3-stamped"
    tokens = [k for k in storage.list_keys(prefix) if k.endswith(".tst")]
    assert len(tokens) == 2 + 2  # manifest, two segments, final
    head = storage.client.head_object(Bucket=storage.bucket,
                                      Key=f"recordings/{prefix}/timestamps/final.tst")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    report = verify_session(storage, prefix, keys.verify_key, None,
                            VerifyOptions(stamps=StampOptions(trusted)))
    assert report.exit_code == 0, report.summary()
    assert report.timestamps is not None and report.timestamps["counts"] == {"stamped": 4}
