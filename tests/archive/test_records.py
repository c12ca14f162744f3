"""The typed record format: what the recorder writes is what verify reads, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from finrtc.archive.keys import Signer
from finrtc.archive.records import (
    FORMAT_VERSION,
    FinalRecord,
    LegalHold,
    Manifest,
    RecordError,
    SealedEvent,
    SegmentRecord,
    open_typed,
    record_digest,
)

from .conftest import Keys, record_sync


def _bodies(session: Path) -> dict[str, dict[str, object]]:
    files = {"manifest": session / "manifest.json", "final": session / "final.json",
             "segment": session / "records" / "000000.json"}
    return {name: json.loads(path.read_text())["body"] for name, path in files.items()}


def test_recorded_bodies_round_trip_byte_for_byte(keys: Keys, tmp_path: Path) -> None:
    bodies = _bodies(record_sync(keys, tmp_path / "archive", "rt", 2.5))
    for name, cls in (("manifest", Manifest), ("final", FinalRecord), ("segment", SegmentRecord)):
        body = bodies[name]
        record = cls.from_json(body)
        # Re-encoding gives the same canonical bytes: the digests the chain links to hold.
        assert record_digest(record.to_json()) == record_digest(body), name
    segment = SegmentRecord.from_json(bodies["segment"])
    assert segment.index == 0 and segment.packet_count > 0
    assert {span.kind for span in segment.tracks.values()} == {"video", "audio"}
    assert all(isinstance(event, SealedEvent) for event in segment.events)
    final = FinalRecord.from_json(bodies["final"])
    video = next(t for t in final.tracks.values() if t.kind == "video")
    audio = next(t for t in final.tracks.values() if t.kind == "audio")
    assert video.width and video.sample_rate is None
    assert audio.sample_rate == 48000 and audio.width is None


def test_seal_and_open_typed(keys: Keys) -> None:
    hold = LegalHold(on=True, room="r", session_id="s", reason="audit 7", placed_at="2026-12-06")
    stored, digest = hold.seal(keys.signer)
    opened, opened_digest = open_typed(stored, keys.verify_key, LegalHold)
    assert opened == hold and opened_digest == digest
    assert "lifted_at" not in json.loads(stored)["body"]
    with pytest.raises(RecordError) as wrong_type:
        open_typed(stored, keys.verify_key, Manifest)
    assert wrong_type.value.code == "record_type"
    other = Signer(SigningKey.generate())
    with pytest.raises(RecordError) as wrong_signer:
        open_typed(hold.seal(other)[0], keys.verify_key, LegalHold)
    assert wrong_signer.value.code == "wrong_signer"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": FORMAT_VERSION + 1}, "format 2"),
        ({"on": "yes"}, "legal_hold.on: expected true or false"),
        ({"reason": 5}, "legal_hold.reason: expected a string"),
        ({"extra": 1}, "unknown field(s) extra"),
        ({"room": None}, "legal_hold.room: expected a string"),
    ],
)
def test_malformed_bodies_are_refused_with_the_field(change: dict[str, object], message: str) -> None:
    body = LegalHold(on=False, room="r", session_id="s", reason="x", lifted_at="t").to_json()
    body.update(change)
    with pytest.raises(RecordError) as error:
        LegalHold.from_json(body)
    assert message in str(error.value)


def test_missing_field_and_nested_types_are_checked(keys: Keys, tmp_path: Path) -> None:
    body = _bodies(record_sync(keys, tmp_path / "archive", "nested", 1.0))["segment"]
    missing = {k: v for k, v in body.items() if k != "merkle_root"}
    with pytest.raises(RecordError, match=r"segment\.merkle_root: missing"):
        SegmentRecord.from_json(missing)
    broken = json.loads(json.dumps(body))
    track_id = next(iter(broken["tracks"]))
    broken["tracks"][track_id]["packets"] = 1.5
    with pytest.raises(RecordError, match=rf"segment\.tracks\.{track_id}\.packets: expected an integer"):
        SegmentRecord.from_json(broken)


def test_the_format_page_lists_every_field() -> None:
    import dataclasses
    import re

    from finrtc.archive.records import (
        DestroyedKey,
        DestructionReceipt,
        SealedKeyRef,
        SignerRef,
        StorageTargetRef,
        TrackSpan,
        TrackTotals,
    )

    page = (Path(__file__).parents[2] / "docs" / "archive-format.md").read_text()
    sections = dict(re.findall(r"^## (\w+) .*?\n(.*?)(?=^## |\Z)", page, re.S | re.M))
    parts = {
        "manifest": (Manifest, SealedKeyRef, SignerRef, StorageTargetRef),
        "segment": (SegmentRecord, TrackSpan, SealedEvent),
        "final": (FinalRecord, TrackTotals),
        "legal_hold": (LegalHold,),
        "destruction_receipt": (DestructionReceipt, DestroyedKey),
    }
    for section, classes in parts.items():
        text = sections[section]
        for cls in classes:
            for item in dataclasses.fields(cls):
                assert f"`{item.name}`" in text, f"docs/archive-format.md {section}: {item.name}"
