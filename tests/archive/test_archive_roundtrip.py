"""Record real VP8 + Opus through SessionRecorder, verify, export and decode the export."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import av
import pytest

from finrtc.archive.keys import ensure_dev_keys, generate_keys, load_signing_key
from finrtc.archive.recorder import SessionRecorder
from finrtc.archive.storage import LocalStorage
from finrtc.archive.verify import VerifyOptions, verify_session
from finrtc.errors import ArchiveError, KeyFileError

from .conftest import (
    ROOM,
    Keys,
    archive_config,
    av_call,
    new_recorder,
    record_sync,
    run_cli,
    verify_args,
)


def decode_durations(path: Path) -> tuple[int, float, float]:
    """(video frames, video seconds, audio seconds) decoded from a WebM."""
    with av.open(str(path)) as container:
        frames = [frame.time for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    return len(frames), (frames[-1] - frames[0]) if frames else 0.0, samples / 48_000


async def test_record_verify_export_decodes(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    call = av_call()
    storage = LocalStorage(tmp_path / "archive")
    recorder = new_recorder(keys, storage, "sess-a", call=call)
    await recorder.start()
    emitted = False
    for packet in call.packets(6.0):
        recorder.offer(packet)
        if packet.media_time >= 2.5 and not emitted:
            emitted = True
            recorder.record_event("script_stage", {"stage": "risk_disclosure"}, 2.5)
    # Arrives after its segment was sealed: sealed into the next record, flagged late.
    recorder.record_event("consent_given", {"by": "customer-1"}, 0.5)
    await recorder.close()
    session = tmp_path / "archive" / ROOM / "sess-a"

    assert run_cli(verify_args(keys, session)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "valid"
    assert report["content_checked"] is True
    assert report["segments_valid"] == report["segments_total"] >= 6
    # The event is sealed in the record of the segment covering t=2.5 s.
    records = sorted((session / "records").glob("*.json"))
    bodies = [json.loads(r.read_text())["body"] for r in records]
    holder = [b for b in bodies if any(e["type"] == "script_stage" for e in b["events"])]
    assert len(holder) == 1 and holder[0]["media_start"] <= 2.5 < holder[0]["media_end"]
    late = [e for r in records for e in json.loads(r.read_text())["body"]["events"]
            if e["type"] == "consent_given"]
    assert len(late) == 1 and late[0]["late"] is True
    # Every segment starts on a video keyframe.
    for record in records:
        body = json.loads(record.read_text())["body"]
        if "cam-1" in body["tracks"]:
            assert body["tracks"]["cam-1"]["starts_with_keyframe"]

    out = tmp_path / "export" / "call.webm"
    out.parent.mkdir()
    code = run_cli(["export", "--reason=test audit",
                    str(session), "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(keys.paths.archive_key), "--out", str(out), "--quiet"])
    assert code == 0
    assert (out.parent / "call.webm.verification.json").is_file()
    assert json.loads((out.parent / "call.webm.verification.json").read_text())["status"] == "valid"
    frames, video_seconds, audio_seconds = decode_durations(out)
    assert frames == 150
    assert abs(video_seconds - 6.0) <= 1.0
    assert abs(audio_seconds - 6.0) <= 1.0


def test_each_segment_plays_on_its_own(keys: Keys, tmp_path: Path) -> None:
    session = record_sync(keys, tmp_path / "archive", "sess-b", 3.0)
    storage = LocalStorage(session)
    from finrtc.archive.records import Manifest, open_typed
    from finrtc.archive.verify import decrypt_segment, open_data_key

    manifest, _digest = open_typed((session / "manifest.json").read_bytes(), keys.verify_key,
                                   Manifest)
    box = open_data_key(storage, "", manifest, keys.archive_private)
    for index in range(3):
        segment = decrypt_segment(storage, "", index, box)
        clip = tmp_path / f"clip{index}.webm"
        clip.write_bytes(segment.webm)
        frames, _, audio = decode_durations(clip)
        assert frames == 25
        assert abs(audio - 1.0) < 0.05


def test_audio_only_session(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    session = record_sync(keys, tmp_path / "archive", "audio-only", 3.0, video=False)
    assert run_cli(verify_args(keys, session)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["segments_valid"] >= 3
    out = tmp_path / "a.webm"
    assert run_cli(["export", "--reason=test audit",
                    str(session), "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(keys.paths.archive_key), "--out", str(out),
                    "--quiet"]) == 0
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["audio"]
        assert abs(sum(f.samples for f in container.decode(audio=0)) / 48_000 - 3.0) < 0.1


def test_verify_without_archive_key_checks_structure(keys: Keys, tmp_path: Path,
                                                     capsys: Any) -> None:
    session = record_sync(keys, tmp_path / "archive", "no-key", 2.0)
    assert run_cli(verify_args(keys, session, content=False)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["content_checked"] is False and report["status"] == "valid"


def test_single_segment_proof(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    session = record_sync(keys, tmp_path / "archive", "proof", 4.0)
    # Damage another segment: segment 1 alone must still prove itself.
    other = session / "segments" / "000003.seg"
    other.chmod(0o640)
    data = bytearray(other.read_bytes())
    data[10] ^= 0xFF
    other.write_bytes(bytes(data))
    assert run_cli(verify_args(keys, session, "--segment", "1")) == 0
    report = json.loads(capsys.readouterr().out)
    proof = report["proof"]
    assert proof["segment"] == 1 and proof["path"] and proof["records_root"]
    from finrtc.archive.merkle import merkle_verify, record_leaf

    assert merkle_verify(record_leaf(proof["record_digest"]), proof["path"],
                         proof["records_root"])
    assert run_cli(verify_args(keys, session, "--segment", "3")) == 1
    assert "ciphertext_mismatch" in capsys.readouterr().out
    assert run_cli(verify_args(keys, session, "--segment", "42")) == 3


def test_client_vanishes_seals_interruption(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    def during(recorder: SessionRecorder, packet: Any) -> None:
        if packet.track_id == "cam-1" and packet.sequence == 50:
            recorder.track_ended("cam-1", clean=False)

    # Video stops after 2 s (the client's camera is gone), audio continues.
    session = record_sync(keys, tmp_path / "archive", "vanish", 4.0, during=during,
                          skip=lambda t: False)
    final = json.loads((session / "final.json").read_text())["body"]
    assert final["tracks"]["cam-1"]["ended"] == "unclean"
    events = [e for r in sorted((session / "records").glob("*.json"))
              for e in json.loads(r.read_text())["body"]["events"]]
    interruption = [e for e in events if e["type"] == "interruption"]
    assert len(interruption) == 1 and interruption[0]["severity"] == "alert"
    assert run_cli(verify_args(keys, session)) == 0
    report = json.loads(capsys.readouterr().out)
    assert any(f["code"] == "event:interruption" for f in report["findings"])


def test_gap_is_found_and_explained_gap_is_a_warning(keys: Keys, tmp_path: Path,
                                                     capsys: Any) -> None:
    def hole(t: float) -> bool:
        return 1.5 <= t < 3.5

    session = record_sync(keys, tmp_path / "archive", "gap", 5.0, skip=hole)
    assert run_cli(verify_args(keys, session)) == 1
    report = json.loads(capsys.readouterr().out)
    gaps = [f for f in report["findings"] if f["code"] == "unexplained_gap"]
    assert gaps and all(1.4 <= f["media_time"] <= 1.6 for f in gaps)

    def during(recorder: SessionRecorder, packet: Any) -> None:
        if packet.track_id == "mic-1" and packet.sequence == 74:
            recorder.record_event("media_paused", {"reason": "network outage"}, 1.5, "warning")

    explained = record_sync(keys, tmp_path / "archive", "gap2", 5.0, skip=hole, during=during)
    assert run_cli(verify_args(keys, explained)) == 0
    report = json.loads(capsys.readouterr().out)
    assert any(f["code"] == "gap" for f in report["findings"])


def test_av_drift_is_found(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    call = av_call()
    recorder = new_recorder(keys, LocalStorage(tmp_path / "archive", durable=False), "drift",
                            call=call)
    asyncio.run(recorder.start())
    import dataclasses

    for packet in call.packets(4.0):
        if packet.track_id == "mic-1":
            # Audio timestamps advance 10 % faster than the 20 ms each packet holds: after 3 s
            # sound lags picture by 300 ms in a player.
            packet = dataclasses.replace(packet, pts=packet.sequence * 1056)
        recorder.offer(packet)
    asyncio.run(recorder.close())
    session = tmp_path / "archive" / ROOM / "drift"
    assert run_cli(verify_args(keys, session)) == 1
    report = json.loads(capsys.readouterr().out)
    drift = [f for f in report["findings"] if f["code"] == "av_drift"]
    assert drift and all(f["segment"] is not None and f["media_time"] > 2.5 for f in drift)
    assert run_cli(verify_args(keys, session, "--max-drift", "5")) == 0


class GatedStorage(LocalStorage):
    """A real folder whose writes wait for a gate: a disk that stalls."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()

    def put(self, key: str, data: bytes, *, retain_until: Any = None) -> None:
        if "/segments/" in key:
            self.gate.wait(10)
        super().put(key, data, retain_until=retain_until)


def test_queue_overflow_is_sealed_not_silent(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    call = av_call()
    storage = GatedStorage(tmp_path / "archive")
    recorder = new_recorder(keys, storage, "overflow", call=call, queue_packets=100)
    asyncio.run(recorder.start())
    for packet in call.packets(8.0):
        recorder.offer(packet)
    assert recorder.dropped_packets > 0
    storage.gate.set()
    asyncio.run(recorder.close())
    session = tmp_path / "archive" / ROOM / "overflow"
    final = json.loads((session / "final.json").read_text())["body"]
    assert final["compromised"] is True
    assert final["dropped_packets"] == recorder.dropped_packets
    events = [e for r in sorted((session / "records").glob("*.json"))
              for e in json.loads(r.read_text())["body"]["events"]]
    lost = sum(e["data"]["lost_packets"] for e in events if e["type"] == "archive_overflow")
    assert lost == recorder.dropped_packets
    code = run_cli(verify_args(keys, session))
    report = json.loads(capsys.readouterr().out)
    assert report["compromised"] is True
    assert code == 0, report["findings"]
    assert any(f["code"] == "recording_compromised" for f in report["findings"])


def test_offer_never_blocks_and_keyframe_hint(keys: Keys, tmp_path: Path) -> None:
    requested: list[str] = []
    call = av_call()
    recorder = new_recorder(keys, LocalStorage(tmp_path / "archive"), "hint", call=call)
    recorder.on_keyframe_needed = requested.append
    asyncio.run(recorder.start())
    for packet in call.packets(3.2):
        recorder.offer(packet)
    asyncio.run(recorder.close())
    # One request per boundary (1 s, 2 s, 3 s) for the one video track.
    assert requested == ["cam-1", "cam-1", "cam-1"]


def test_unknown_retention_class_and_bad_names(keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="retention class 'nope'"):
        new_recorder(keys, LocalStorage(tmp_path), "s", retention_class="nope")
    with pytest.raises(ArchiveError, match="cannot name an archive folder"):
        new_recorder(keys, LocalStorage(tmp_path), "../escape")


def test_local_storage_never_overwrites(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("a/b/c.bin", b"one")
    with pytest.raises(ArchiveError, match="refusing to overwrite"):
        storage.put("a/b/c.bin", b"two")
    assert storage.get("a/b/c.bin") == b"one"
    assert not [p for p in (tmp_path / "a" / "b").iterdir() if ".tmp-" in p.name]


def test_keys_generate_permissions_and_refusal(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "k"
    assert run_cli(["keys", "generate", "--out", str(out)]) == 0
    for name, mode in (("signer.key", 0o600), ("archive.key", 0o600),
                       ("signer.pub", 0o644), ("archive.pub", 0o644)):
        assert stat.S_IMODE((out / name).stat().st_mode) == mode
    before = (out / "signer.key").read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        run_cli(["keys", "generate", "--out", str(out)])
    assert (out / "signer.key").read_bytes() == before
    assert (out / "signer.key").read_text().startswith("finrtc ed25519-signing-key v1\n")


def test_ensure_dev_keys_creates_then_reuses_and_checks(tmp_path: Path) -> None:
    keys_dir = tmp_path / "data" / "keys"
    first = ensure_dev_keys(keys_dir)
    signer = first.signer_key.read_bytes()
    again = ensure_dev_keys(keys_dir)
    assert again.signer_key.read_bytes() == signer
    os.chmod(first.signer_key, 0o644)
    with pytest.raises(KeyFileError, match="unsafe permissions"):
        ensure_dev_keys(keys_dir)
    os.chmod(first.signer_key, 0o600)
    first.archive_pub.unlink()
    with pytest.raises(KeyFileError, match="incomplete key set"):
        ensure_dev_keys(keys_dir)


def test_swapped_key_files_are_refused(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path / "k")
    with pytest.raises(KeyFileError, match="swap"):
        load_signing_key(paths.archive_key)


def test_verify_cannot_check_exit_3(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "empty").mkdir()
    assert run_cli(verify_args(keys, tmp_path / "empty")) == 3
    session = record_sync(keys, tmp_path / "archive", "k3", 1.0)
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    assert run_cli(["verify", str(session), "--signer-key", str(bad), "--quiet"]) == 3
    other = generate_keys(tmp_path / "other")
    assert run_cli(["verify", str(session), "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(other.archive_key), "--quiet"]) == 3
    report = verify_session(LocalStorage(session), "", keys.verify_key, None, VerifyOptions())
    assert report.exit_code == 0


def test_two_participants_each_segment_starts_on_keyframes(keys: Keys, tmp_path: Path,
                                                           capsys: Any) -> None:
    import heapq

    from finrtc.model import MediaKind, Role

    from .synth import AudioSource, Call, VideoSource, track

    agent = Call(VideoSource("agent-cam", keyframe_interval=1000), AudioSource("agent-mic"))
    customer = Call(VideoSource("cust-cam", width=192, height=144, keyframe_interval=1000),
                    AudioSource("cust-mic", channels=1, frequency=660))
    sources = {"agent-cam": agent.video, "cust-cam": customer.video}
    recorder = SessionRecorder.create(
        archive_config(), tmp_path, ROOM, "two",
        "default", None, keys.signer, [keys.archive_public],
        storage=LocalStorage(tmp_path / "archive", durable=False),
        on_keyframe_needed=lambda track_id: sources[track_id].force_keyframe(),  # type: ignore[union-attr]
    )
    for call, who, role in ((agent, "agent-1", Role.AGENT), (customer, "cust-1", Role.CUSTOMER)):
        assert call.video is not None and call.audio is not None
        recorder.add_track(track(ROOM, "two", call.video.track_id, MediaKind.VIDEO, who, role),
                           width=call.video.width, height=call.video.height)
        recorder.add_track(track(ROOM, "two", call.audio.track_id, MediaKind.AUDIO, who, role),
                           channels=call.audio.channels)
    asyncio.run(recorder.start())
    for packet in heapq.merge(agent.packets(4.0), customer.packets(4.0),
                              key=lambda p: p.media_time):
        recorder.offer(packet)
    asyncio.run(recorder.close())
    session = tmp_path / "archive" / ROOM / "two"
    for record in sorted((session / "records").glob("*.json")):
        body = json.loads(record.read_text())["body"]
        for name in ("agent-cam", "cust-cam"):
            assert body["tracks"][name]["starts_with_keyframe"], (record.name, name)
    assert run_cli(verify_args(keys, session)) == 0
    capsys.readouterr()
    out = tmp_path / "two.webm"
    assert run_cli(["export", "--reason=test audit",
                    str(session), "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(keys.paths.archive_key), "--out", str(out),
                    "--quiet"]) == 0
    with av.open(str(out)) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "audio", "video", "video"]
        sizes = {(s.codec_context.width, s.codec_context.height)
                 for s in container.streams.video}
        assert sizes == {(160, 120), (192, 144)}
        counts: dict[int, int] = {}
        for frame in container.decode(*container.streams.video):
            counts[frame.width] = counts.get(frame.width, 0) + 1
        assert counts == {160: 100, 192: 100}


def test_periodic_keyframe_slightly_early_starts_the_segment(keys: Keys, tmp_path: Path,
                                                             capsys: Any) -> None:
    from .synth import AudioSource, Call, VideoSource

    # The encoder's own GOP is 0.96 s and nobody forces keyframes: each keyframe lands 40 ms
    # before a 1 s boundary, and must still start the next segment.
    call = Call(VideoSource("cam-1", keyframe_interval=24), AudioSource("mic-1"))
    recorder = new_recorder(keys, LocalStorage(tmp_path / "archive", durable=False), "early")
    asyncio.run(recorder.start())
    for packet in call.packets(4.0):
        recorder.offer(packet)
    asyncio.run(recorder.close())
    session = tmp_path / "archive" / ROOM / "early"
    bodies = [json.loads(r.read_text())["body"] for r in sorted((session / "records").glob("*"))]
    starts = [round(b["tracks"]["cam-1"]["first_time"], 2) for b in bodies if "cam-1" in b["tracks"]]
    assert starts == [0.0, 0.96, 1.92, 2.88, 3.84]
    assert all(b["tracks"]["cam-1"]["starts_with_keyframe"] for b in bodies if "cam-1" in b["tracks"])
    assert not [e for b in bodies for e in b["events"] if e["type"] == "segment_without_keyframe"]
    assert run_cli(verify_args(keys, session)) == 0


def test_clip_package_proves_one_segment_alone(keys: Keys, tmp_path: Path, capsys: Any) -> None:
    session = record_sync(keys, tmp_path / "archive", "clip", 4.0)
    clip = tmp_path / "clip-2"
    assert run_cli(["export", "--reason=test audit",
                    str(session), "--segment", "2", "--out", str(clip),
                    "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(keys.paths.archive_key), "--quiet"]) == 0
    capsys.readouterr()
    # The auditor has only the folder and the signer's public key.
    assert run_cli(["verify", str(clip), "--signer-key", str(keys.paths.signer_pub),
                    "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["segments_valid"] == 1 and report["content_checked"]
    assert report["proof"]["segment"] == 2 and report["proof"]["path"]
    with av.open(str(clip / "clip.webm")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 25

    # Altered media, a record from another segment, or a foreign final record all fail.
    tampered = tmp_path / "tampered"
    shutil.copytree(clip, tampered)
    data = bytearray((tampered / "segment.bin").read_bytes())
    data[-30] ^= 0x01
    (tampered / "segment.bin").write_bytes(bytes(data))
    assert run_cli(["verify", str(tampered), "--signer-key", str(keys.paths.signer_pub),
                    "--json"]) == 1
    assert "plaintext_mismatch" in capsys.readouterr().out
    other = tmp_path / "other"
    shutil.copytree(clip, other)
    shutil.copy(session / "records" / "000001.json", other / "record.json")
    assert run_cli(["verify", str(other), "--signer-key", str(keys.paths.signer_pub),
                    "--json"]) == 1
    out = capsys.readouterr().out
    assert "record_out_of_place" in out and "proof_invalid" in out
    foreign = record_sync(keys, tmp_path / "archive", "clip-other", 4.0)
    wrong_final = tmp_path / "wrong-final"
    shutil.copytree(clip, wrong_final)
    shutil.copy(foreign / "final.json", wrong_final / "final.json")
    assert run_cli(["verify", str(wrong_final), "--signer-key", str(keys.paths.signer_pub),
                    "--json"]) == 1
    assert "final_foreign" in capsys.readouterr().out
    # A damaged segment cannot be exported as a clip at all.
    (session / "segments" / "000001.seg").chmod(0o640)
    (session / "segments" / "000001.seg").write_bytes(b"x")
    assert run_cli(["export", "--reason=test audit",
                    str(session), "--segment", "1", "--out", str(tmp_path / "c1"),
                    "--signer-key", str(keys.paths.signer_pub),
                    "--archive-key", str(keys.paths.archive_key), "--quiet"]) == 3
    assert not (tmp_path / "c1").exists()
