"""`finrtc export`: decrypt the verified segments of a session and join them into one WebM.

Only segments that passed verification are exported; the verification report is written next to
the output (`<out>.verification.json` and `.txt`) so whoever receives the file also receives what
was proven about it. Packets are copied, never re-encoded, with their exact session timestamps.
"""

from __future__ import annotations

import contextlib
import fractions
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from nacl.public import PrivateKey
from nacl.signing import VerifyKey

from finrtc.archive import layout
from finrtc.archive.records import Manifest, open_typed
from finrtc.archive.segment import split_segment
from finrtc.archive.storage import Storage
from finrtc.archive.timestamping import token_name
from finrtc.archive.verify import (
    Progress,
    VerifyOptions,
    VerifyReport,
    decrypt_segment,
    open_data_key,
    verify_session,
)
from finrtc.errors import ArchiveError


@dataclass
class ExportResult:
    report: VerifyReport
    output: Path
    report_json: Path
    report_text: Path
    segments: int
    packets: int


def report_paths(output: Path) -> tuple[Path, Path]:
    return (
        output.with_name(output.name + ".verification.json"),
        output.with_name(output.name + ".verification.txt"),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.partial")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def export_session(
    storage: Storage,
    prefix: str,
    verify_key: VerifyKey,
    archive_key: PrivateKey,
    output: Path,
    *,
    options: VerifyOptions | None = None,
    progress: Progress | None = None,
    source: str | None = None,
) -> ExportResult:
    report = verify_session(storage, prefix, verify_key, archive_key, options, progress, source)
    json_path, text_path = report_paths(output)
    indices = list(report.valid_segments)
    if not report.content_checked or not indices:
        _write_reports(report, json_path, text_path, output, exported=[])
        reason = (
            "the session keys were destroyed" if report.keys_destroyed is not None
            else "no segment could be decrypted and verified"
        )
        raise ArchiveError(f"nothing to export from {report.source}: {reason} "
                           f"(see {text_path})")
    manifest, _digest = open_typed(storage.get(layout.join(prefix, layout.MANIFEST)), verify_key,
                                   Manifest)
    box = open_data_key(storage, prefix, manifest, archive_key)

    # Pass 1: the tracks of every exported segment (streams must exist before the first packet).
    tracks: dict[str, dict[str, Any]] = {}
    for index in indices:
        for track in decrypt_segment(storage, prefix, index, box).tracks:
            tracks.setdefault(str(track["track_id"]), track)
    video_first = sorted(tracks.values(), key=lambda t: (t.get("kind") != "video", t["track_id"]))

    temp = output.with_name(f".{output.name}.partial")
    container = av.open(str(temp), "w", format="webm")
    streams: dict[str, Any] = {}
    for track in video_first:
        if track.get("kind") == "video":
            streams[track["track_id"]] = container.add_mux_stream(
                "vp8", width=int(track.get("width", 0)), height=int(track.get("height", 0))
            )
        else:
            layout_name = "mono" if int(track.get("channels", 2)) == 1 else "stereo"
            streams[track["track_id"]] = container.add_stream(
                "libopus", rate=int(track.get("sample_rate", 48000)), layout=layout_name
            )
    packets = 0
    last_dts: dict[str, int] = {}
    try:
        for index in indices:
            segment = decrypt_segment(storage, prefix, index, box)
            by_stream: dict[int, list[Any]] = {}
            for row in segment.packets:
                by_stream.setdefault(row.stream, []).append(row)
            seen: dict[int, int] = {}
            with av.open(io.BytesIO(segment.webm), "r", format="webm") as source_container:
                for demuxed in source_container.demux():
                    if demuxed.size == 0:
                        continue
                    stream_index = demuxed.stream.index
                    position = seen.get(stream_index, 0)
                    seen[stream_index] = position + 1
                    row = by_stream[stream_index][position]
                    if last_dts.get(row.track_id, -1) >= row.pts:
                        continue
                    last_dts[row.track_id] = row.pts
                    packet = av.Packet(bytes(demuxed))
                    packet.pts = row.pts
                    packet.dts = row.pts
                    packet.time_base = fractions.Fraction(*row.time_base)
                    packet.is_keyframe = row.keyframe
                    if row.duration:
                        packet.duration = row.duration
                    packet.stream = streams[row.track_id]
                    container.mux(packet)
                    packets += 1
        container.close()
    except BaseException:
        container.close()
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, output)
    _write_reports(report, json_path, text_path, output, exported=indices)
    return ExportResult(report, output, json_path, text_path, len(indices), packets)


def _write_reports(report: VerifyReport, json_path: Path, text_path: Path, output: Path,
                   exported: list[int]) -> None:
    document = report.to_json()
    document["export"] = {"file": output.name, "segments": exported}
    _write_atomic(json_path, json.dumps(document, indent=2).encode() + b"\n")
    skipped = sorted(set(range(report.segments_total)) - set(exported))
    text = report.summary() + "\n" + (
        f"  exported {len(exported)} segment(s) to {output.name}"
        + (f"; NOT exported (failed verification): {skipped}" if skipped else "")
        + "\n"
    )
    _write_atomic(text_path, text.encode())


def export_clip_package(
    storage: Storage,
    prefix: str,
    verify_key: VerifyKey,
    archive_key: PrivateKey,
    index: int,
    out_dir: Path,
    *,
    source: str | None = None,
) -> VerifyReport:
    """Write one verified segment as a self-contained clip package (see verify.CLIP_FILES).

    Whoever receives the folder can check it with `finrtc verify DIR --signer-key PUB`: no
    archive key and no other segment needed.
    """
    from finrtc.archive.verify import CLIP_PROOF

    report = verify_session(storage, prefix, verify_key, archive_key,
                            VerifyOptions(segment=index), source=source)
    if index not in report.valid_segments or not report.content_checked:
        raise ArchiveError(
            f"segment {index} of {report.source} does not verify; no clip exported:\n"
            + report.summary()
        )
    manifest_bytes = storage.get(layout.join(prefix, layout.MANIFEST))
    manifest, _digest = open_typed(manifest_bytes, verify_key, Manifest)
    box = open_data_key(storage, prefix, manifest, archive_key)
    plaintext = box.decrypt(storage.get(layout.join(prefix, layout.segment_name(index))))
    segment = split_segment(plaintext)
    try:
        out_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise ArchiveError(f"{out_dir} already exists; choose a new folder for the clip") from None
    _write_atomic(out_dir / "manifest.json", manifest_bytes)
    record = storage.get(layout.join(prefix, layout.record_name(index)))
    _write_atomic(out_dir / "record.json", record)
    with contextlib.suppress(FileNotFoundError):
        _write_atomic(out_dir / "final.json", storage.get(layout.join(prefix, layout.FINAL)))
    # Trusted timestamps travel with the clip, so its time is checkable without the archive.
    for name, target in ((layout.MANIFEST, "manifest.tst"), (layout.record_name(index), "record.tst"),
                         (layout.FINAL, "final.tst")):
        with contextlib.suppress(FileNotFoundError):
            _write_atomic(out_dir / target, storage.get(layout.join(prefix, token_name(name))))
    _write_atomic(out_dir / "segment.bin", bytes(plaintext))
    _write_atomic(out_dir / "clip.webm", segment.webm)
    proof = dict(report.proof or {})
    _write_atomic(out_dir / CLIP_PROOF, json.dumps(proof, indent=2).encode() + b"\n")
    _write_atomic(out_dir / "report.txt", report.summary().encode() + b"\n")
    return report
