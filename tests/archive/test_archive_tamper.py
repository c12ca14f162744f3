"""Tamper suite: every manipulation of a sealed session is detected with the right finding and
exit code (0 valid, 1 tampered or invalid, 2 interrupted, 3 cannot check)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.secret
import pytest
from nacl.public import SealedBox
from nacl.signing import SigningKey

from finrtc.archive.keys import Signer
from finrtc.archive.records import seal_record

from .conftest import Keys, run_cli, verify_args

Session = tuple[Keys, Path, Path]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def body_of(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(path.read_text())["body"]
    return body


def data_key(keys: Keys, session: Path) -> bytes:
    sealed = next((session / "keys").glob("*.sealed")).read_bytes()
    return bytes(SealedBox(keys.archive_private).decrypt(sealed))


def flip_ciphertext(keys: Keys, a: Path, b: Path) -> None:
    flip(a / "segments" / "000002.seg", 500)


def flip_plaintext_reencrypted(keys: Keys, a: Path, b: Path) -> None:
    """Alter one media byte inside the plaintext and re-encrypt it with the session's own key."""
    box = nacl.secret.SecretBox(data_key(keys, a))
    path = a / "segments" / "000002.seg"
    plain = bytearray(box.decrypt(path.read_bytes()))
    plain[-40] ^= 0x01
    path.write_bytes(bytes(box.encrypt(bytes(plain))))


def flip_record_byte(keys: Keys, a: Path, b: Path) -> None:
    path = a / "records" / "000001.json"
    envelope = json.loads(path.read_text())
    envelope["body"]["media_end"] = envelope["body"]["media_end"] + 0.001
    path.write_text(json.dumps(envelope))


def drop_segment(keys: Keys, a: Path, b: Path) -> None:
    (a / "segments" / "000002.seg").unlink()
    (a / "records" / "000002.json").unlink()


def drop_and_renumber(keys: Keys, a: Path, b: Path) -> None:
    drop_segment(keys, a, b)
    for index in range(3, 6):
        (a / "segments" / f"{index:06d}.seg").rename(a / "segments" / f"{index - 1:06d}.seg")
        (a / "records" / f"{index:06d}.json").rename(a / "records" / f"{index - 1:06d}.json")


def duplicate_segment(keys: Keys, a: Path, b: Path) -> None:
    shutil.copy(a / "segments" / "000001.seg", a / "segments" / "000006.seg")
    shutil.copy(a / "records" / "000001.json", a / "records" / "000006.json")


def reorder_segments(keys: Keys, a: Path, b: Path) -> None:
    for folder, suffix in (("segments", ".seg"), ("records", ".json")):
        one, two = a / folder / f"000001{suffix}", a / folder / f"000002{suffix}"
        temp = a / folder / "swap"
        one.rename(temp)
        two.rename(one)
        temp.rename(two)


def reorder_media_only(keys: Keys, a: Path, b: Path) -> None:
    one, two = a / "segments" / "000001.seg", a / "segments" / "000002.seg"
    temp = a / "segments" / "swap"
    one.rename(temp)
    two.rename(one)
    temp.rename(two)


def truncate_segment(keys: Keys, a: Path, b: Path) -> None:
    path = a / "segments" / "000003.seg"
    path.write_bytes(path.read_bytes()[:-100])


def truncate_last_segment_keep_final(keys: Keys, a: Path, b: Path) -> None:
    (a / "segments" / "000005.seg").unlink()
    (a / "records" / "000005.json").unlink()


def remove_final(keys: Keys, a: Path, b: Path) -> None:
    (a / "final.json").unlink()


def forge_signature(keys: Keys, a: Path, b: Path) -> None:
    path = a / "records" / "000004.json"
    envelope = json.loads(path.read_text())
    signature = bytearray(base64.b64decode(envelope["signature"]))
    signature[7] ^= 0x40
    envelope["signature"] = base64.b64encode(bytes(signature)).decode()
    path.write_text(json.dumps(envelope))


def sign_with_other_key(keys: Keys, a: Path, b: Path) -> None:
    path = a / "records" / "000003.json"
    body = body_of(path)
    body["events"].append({"type": "consent_given", "media_time": 3.1, "severity": "info",
                           "data": {}, "wall_clock": 0.0})
    path.write_bytes(seal_record(body, Signer(SigningKey.generate())))


def forge_final_with_other_key(keys: Keys, a: Path, b: Path) -> None:
    path = a / "final.json"
    body = body_of(path)
    body["compromised"] = False
    path.write_bytes(seal_record(body, Signer(SigningKey.generate())))


def swap_segment_between_sessions(keys: Keys, a: Path, b: Path) -> None:
    shutil.copy(b / "segments" / "000002.seg", a / "segments" / "000002.seg")


def swap_segment_and_record_between_sessions(keys: Keys, a: Path, b: Path) -> None:
    shutil.copy(b / "segments" / "000002.seg", a / "segments" / "000002.seg")
    shutil.copy(b / "records" / "000002.json", a / "records" / "000002.json")


def swap_whole_tail_between_sessions(keys: Keys, a: Path, b: Path) -> None:
    for index in range(2, 6):
        shutil.copy(b / "segments" / f"{index:06d}.seg", a / "segments" / f"{index:06d}.seg")
        shutil.copy(b / "records" / f"{index:06d}.json", a / "records" / f"{index:06d}.json")
    shutil.copy(b / "final.json", a / "final.json")


def tamper_manifest(keys: Keys, a: Path, b: Path) -> None:
    path = a / "manifest.json"
    envelope = json.loads(path.read_text())
    envelope["body"]["retain_until"] = "2020-01-01T00:00:00+00:00"
    path.write_text(json.dumps(envelope))


def tamper_sealed_key(keys: Keys, a: Path, b: Path) -> None:
    flip(next((a / "keys").glob("*.sealed")), 40)


def remove_last_and_final(keys: Keys, a: Path, b: Path) -> None:
    truncate_last_segment_keep_final(keys, a, b)
    remove_final(keys, a, b)


CASES: list[tuple[str, Callable[[Keys, Path, Path], None], int, str, int | None, bool]] = [
    # name, tamper, exit code, finding, segment of the finding, needs the content key
    ("ciphertext_byte", flip_ciphertext, 1, "ciphertext_mismatch", 2, False),
    ("record_byte", flip_record_byte, 1, "signature_invalid", 1, False),
    ("dropped_segment", drop_segment, 1, "segment_missing", 2, False),
    ("dropped_renumbered", drop_and_renumber, 1, "record_out_of_place", 2, False),
    ("duplicated_segment", duplicate_segment, 1, "record_out_of_place", 6, False),
    ("reordered_segments", reorder_segments, 1, "record_out_of_place", 1, False),
    ("reordered_media_only", reorder_media_only, 1, "ciphertext_mismatch", 1, False),
    ("truncated_segment", truncate_segment, 1, "ciphertext_mismatch", 3, False),
    ("truncated_session", truncate_last_segment_keep_final, 1, "final_count_mismatch", None, False),
    ("removed_final", remove_final, 2, "no_final_record", None, False),
    ("truncated_and_final_removed", remove_last_and_final, 2, "no_final_record", None, False),
    ("forged_signature", forge_signature, 1, "signature_invalid", 4, False),
    ("other_signer_record", sign_with_other_key, 1, "wrong_signer", 3, False),
    ("other_signer_final", forge_final_with_other_key, 1, "final_wrong_signer", None, False),
    ("swapped_segment", swap_segment_between_sessions, 1, "ciphertext_mismatch", 2, False),
    ("swapped_segment_record", swap_segment_and_record_between_sessions, 1, "foreign_record",
     2, False),
    ("swapped_tail", swap_whole_tail_between_sessions, 1, "foreign_record", 2, False),
    ("manifest", tamper_manifest, 1, "manifest_signature_invalid", None, False),
    ("sealed_key", tamper_sealed_key, 1, "sealed_key_invalid", None, True),
]


@pytest.mark.parametrize(
    ("tamper", "code", "finding", "segment", "content"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_tamper_detected(session_copy: Session, capsys: Any,
                         tamper: Callable[[Keys, Path, Path], None], code: int, finding: str,
                         segment: int | None, content: bool) -> None:
    keys, a, b = session_copy
    assert run_cli(verify_args(keys, a)) == 0
    capsys.readouterr()
    tamper(keys, a, b)
    for with_key in (True, False) if not content else (True,):
        result = run_cli(verify_args(keys, a, content=with_key))
        report = json.loads(capsys.readouterr().out)
        assert result == code, report["findings"]
        matches = [f for f in report["findings"] if f["code"] == finding]
        assert matches, report["findings"]
        if segment is not None:
            assert any(f["segment"] == segment for f in matches)
            assert all(f["media_time"] is not None for f in matches if f["segment"] is not None)
        if code == 2:
            assert report["last_sealed_media_time"] is not None


def test_plaintext_flip_reencrypted_with_right_key(session_copy: Session, capsys: Any) -> None:
    """With the data key an attacker can re-encrypt altered media: the sealed ciphertext digest
    catches it; an insider who can also re-sign the record's ciphertext digest is still caught
    by the plaintext digest and by the next record's chain link."""
    keys, a, b = session_copy
    flip_plaintext_reencrypted(keys, a, b)
    assert run_cli(verify_args(keys, a)) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(f["code"] == "ciphertext_mismatch" and f["segment"] == 2
               for f in report["findings"])

    # Insider with the signing key re-signs a record with the new ciphertext digest.
    import hashlib

    path = a / "records" / "000002.json"
    body = body_of(path)
    body["ciphertext_sha256"] = hashlib.sha256((a / "segments" / "000002.seg").read_bytes()
                                               ).hexdigest()
    body["ciphertext_bytes"] = (a / "segments" / "000002.seg").stat().st_size
    path.write_bytes(seal_record(body, keys.signer))
    assert run_cli(verify_args(keys, a)) == 1
    report = json.loads(capsys.readouterr().out)
    codes = {(f["code"], f["segment"]) for f in report["findings"]}
    assert ("plaintext_mismatch", 2) in codes
    # The next record's link still names the original record: the re-signing shows.
    assert ("chain_broken", 3) in codes


def test_insider_resealing_plaintext_consistently_breaks_merkle(session_copy: Session,
                                                                capsys: Any) -> None:
    """Even an insider who recomputes the plaintext digest cannot hide altered media: the
    container no longer matches the committed packet digests, and the chain link breaks."""
    import hashlib

    keys, a, _b = session_copy
    box = nacl.secret.SecretBox(data_key(keys, a))
    seg = a / "segments" / "000002.seg"
    plain = bytearray(box.decrypt(seg.read_bytes()))
    plain[-40] ^= 0x01
    cipher = bytes(box.encrypt(bytes(plain)))
    seg.write_bytes(cipher)
    path = a / "records" / "000002.json"
    body = body_of(path)
    body["plaintext_sha256"] = hashlib.sha256(bytes(plain)).hexdigest()
    body["ciphertext_sha256"] = hashlib.sha256(cipher).hexdigest()
    body["ciphertext_bytes"] = len(cipher)
    path.write_bytes(seal_record(body, keys.signer))
    assert run_cli(verify_args(keys, a)) == 1
    report = json.loads(capsys.readouterr().out)
    codes = {(f["code"], f["segment"]) for f in report["findings"]}
    assert ("container_mismatch", 2) in codes or ("segment_malformed", 2) in codes
    assert ("chain_broken", 3) in codes


def test_human_summary_names_segment_and_time(session_copy: Session, capsys: Any) -> None:
    keys, a, b = session_copy
    flip_ciphertext(keys, a, b)
    argv = [arg for arg in verify_args(keys, a) if arg != "--json"]
    assert run_cli(argv) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out
    assert "ciphertext_mismatch [segment 2, t=2.000s]" in out


def test_forged_far_index_is_one_finding(session_copy: Session, capsys: Any) -> None:
    keys, a, _b = session_copy
    shutil.copy(a / "records" / "000001.json", a / "records" / "999999.json")
    assert run_cli(verify_args(keys, a, content=False)) == 1
    report = json.loads(capsys.readouterr().out)
    assert len(report["findings"]) < 10
    missing = [f for f in report["findings"] if f["code"] == "segment_missing"]
    assert [f["segment"] for f in missing] == [6, 999999]
    assert "records 6..999998 are missing" in missing[0]["message"]
