"""Forensic watermark: error control, quality, real VP8 round trips, CLI, hook events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from finrtc.cli import main
from finrtc.forensics import ecc, watermark
from finrtc.forensics.video import mark_file, scan_file, write_vp8_webm
from finrtc.hooks.builtin.forensic_watermark import ForensicWatermark, ForensicWatermarkOptions
from finrtc.hooks.contract import HookContext, HookEvent, VideoFrame
from finrtc.hooks.testing import check_hook, video_from_image
from finrtc.model import MediaKind, Role, TrackInfo
from finrtc.watermark_cli import EXIT_FOUND, EXIT_NOT_FOUND, KEY_ENV

TRACK = TrackInfo("room-1", "session-1", "alice", Role.AGENT, "track-v", MediaKind.VIDEO)
MARK = 0xC0FFEE42


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def astronaut_frames() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return video_from_image(skimage.data.astronaut(), 640, 480, 60)


def marked(frames: list, payload: int = MARK, **kwargs: object) -> list:
    embedder = watermark.Embedder(payload, **kwargs)  # type: ignore[arg-type]
    out = []
    for y, u, v in frames:
        y = y.copy()
        embedder.embed(y)
        out.append((y, u, v))
    return out


def test_ecc_corrects_three_percent_bit_errors() -> None:
    rng = np.random.default_rng(7)
    for _ in range(100):
        payload = int(rng.integers(0, 1 << 32))
        symbols = ecc.encode_payload(payload).astype(np.float64)
        flips = rng.choice(ecc.CODED_BITS, size=round(0.03 * ecc.CODED_BITS), replace=False)
        symbols[flips] *= -1
        assert ecc.split_info(ecc.viterbi_decode(symbols)) == (payload, True)


def test_noise_never_decodes_to_an_id() -> None:
    extractor = watermark.Extractor()
    rng = np.random.default_rng(11)
    accepted = 0
    for _ in range(600):
        extractor._residual = rng.normal(0, 3, extractor._residual.shape)
        extractor.frames = 30
        accepted += sum(extractor.decode(channel)[1] for channel in watermark.Channel)
    assert accepted == 0


def test_mark_is_invisible_by_psnr(astronaut_frames: list) -> None:
    marked_frames = marked(astronaut_frames[:10])
    values = [psnr(a[0], b[0]) for a, b in zip(astronaut_frames[:10], marked_frames, strict=True)]
    assert min(values) >= 38.0, values
    # Chroma is never touched.
    assert all(a[1] is b[1] for a, b in zip(astronaut_frames[:10], marked_frames, strict=True))


def test_flat_areas_get_a_weaker_mark() -> None:
    y = np.full((480, 640), 128, dtype=np.uint8)
    y[:, 320:] = np.random.default_rng(3).integers(0, 255, (480, 320), dtype=np.uint8)
    original = y.copy()
    watermark.Embedder(MARK).embed(y)
    change = np.abs(y.astype(np.int16) - original)
    assert change[:, :300].mean() < 0.6 * change[:, 340:].mean()


@pytest.mark.parametrize(("height", "width"), [(480, 640), (360, 640), (1080, 1920)])
def test_embed_is_the_saturated_sum_of_the_cell_pattern(height: int, width: int) -> None:
    # Black and white bands force saturation at both ends; the fast path must equal the plain
    # clip(y + delta) of the pattern expanded to pixels, on layouts with uneven cell sizes too.
    rng = np.random.default_rng(11)
    y = rng.integers(0, 256, (height, width), dtype=np.uint8)
    y[: height // 4] = 0
    y[-height // 4 :] = 255
    original = y.copy()
    embedder = watermark.Embedder(MARK)
    embedder.embed(y)
    layout = watermark._layout(height, width)
    gain = watermark.texture_gain(original, layout)
    cells = np.rint(watermark.DEFAULT_STRENGTH * gain * embedder._unit).astype(np.int16)
    rows = np.repeat(np.arange(watermark.GRID_H), layout.row_counts)
    cols = np.repeat(np.arange(watermark.GRID_W), layout.col_counts)
    expected = np.clip(original.astype(np.int16) + cells[rows][:, cols], 0, 255)
    assert np.array_equal(y, expected)
    assert not np.array_equal(y, original)


def test_embeds_in_place_into_padded_plane_views() -> None:
    # Decoded frames keep their rows padded to the line size; only the visible part may change.
    buffer = np.full((480, 704), 100, dtype=np.uint8)
    buffer[:, :640] = np.random.default_rng(5).integers(60, 200, (480, 640), dtype=np.uint8)
    original = buffer.copy()
    watermark.Embedder(MARK).embed(buffer[:, :640])
    assert np.array_equal(buffer[:, 640:], original[:, 640:])
    assert not np.array_equal(buffer[:, :640], original[:, :640])
    assert watermark.luma_psnr(original[:, :640], buffer[:, :640]) >= 38.0


def test_survives_vp8_at_500_kbps_within_two_seconds(astronaut_frames: list, tmp_path: Path) -> None:
    path = tmp_path / "marked.webm"
    write_vp8_webm(marked(astronaut_frames), path, bitrate=500_000)
    assert path.stat().st_size * 8 / 2.0 < 700_000  # the encoder really ran near 500 kbps
    scan = scan_file(path, window_s=2.0)
    assert [(m.channel, m.id) for m in scan.marks] == [(watermark.Channel.LIVE, MARK)]
    assert scan.marks[0].confidence >= watermark.SCORE_THRESHOLD
    # The wrong key finds nothing rather than a wrong ID.
    assert scan_file(path, key=b"another operator").marks == []


def test_rescaled_copy_still_decodes(astronaut_frames: list, tmp_path: Path) -> None:
    import av

    path = tmp_path / "marked.webm"
    write_vp8_webm(marked(astronaut_frames[:30]), path, bitrate=1_000_000)
    rescaled = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            picture = frame.reformat(width=960, height=720)
            rescaled.append(picture.to_ndarray()[:720].copy())
    result = watermark.extract(rescaled)
    assert result is not None and result.id == MARK


def test_unmarked_video_yields_no_mark(astronaut_frames: list, tmp_path: Path) -> None:
    for name, frames in (
        ("astronaut", astronaut_frames[:45]),
        ("camera", video_from_image(np.stack([skimage.data.camera()] * 3, -1), 640, 480, 45, seed=2)),
    ):
        path = tmp_path / f"{name}.webm"
        write_vp8_webm(frames, path)
        assert scan_file(path, window_s=1.0).marks == [], name


def test_recipient_mark_on_top_of_live_mark(astronaut_frames: list, tmp_path: Path) -> None:
    live = tmp_path / "live.webm"
    write_vp8_webm(marked(astronaut_frames[:45]), live, bitrate=1_000_000)
    recipient_id = watermark.derive_mark_id(watermark.DEFAULT_KEY, "recipient", "session-1", "auditor@bank")
    export = tmp_path / "export.webm"
    assert mark_file(live, export, recipient_id, bitrate=1_000_000) == 45
    found = {(m.channel, m.id) for m in scan_file(export).marks}
    # The fresh recipient mark dominates; the older live mark may fade but is never misread.
    assert (watermark.Channel.RECIPIENT, recipient_id) in found
    assert found <= {(watermark.Channel.LIVE, MARK), (watermark.Channel.RECIPIENT, recipient_id)}
    # A leaker re-encoding the export at 500 kbps still leaves the recipient's ID.
    import av

    frames = []
    with av.open(str(export)) as container:
        for frame in container.decode(video=0):
            planes = frame.to_ndarray()
            frames.append((planes[:480].copy(), planes[480:600].reshape(240, 320).copy(),
                           planes[600:].reshape(240, 320).copy()))
    leak = tmp_path / "leak.webm"
    write_vp8_webm(frames, leak, bitrate=500_000)
    assert [(m.channel, m.id) for m in scan_file(leak).marks] == [(watermark.Channel.RECIPIENT, recipient_id)]


def test_cli_extract_reports_id_or_says_none(
    astronaut_frames: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marked_path = tmp_path / "marked.webm"
    clean_path = tmp_path / "clean.webm"
    write_vp8_webm(marked(astronaut_frames[:45], key=b"bank-secret"), marked_path)
    write_vp8_webm(astronaut_frames[:45], clean_path)

    assert main(["watermark", "extract", str(marked_path), "--json", "--key", "bank-secret"]) == EXIT_FOUND
    report = json.loads(capsys.readouterr().out)
    assert report["found"] is True
    assert [m["id"] for m in report["marks"]] == [f"{MARK:08x}"]

    assert main(["watermark", "extract", str(clean_path), "--key", "bank-secret"]) == EXIT_NOT_FOUND
    assert "no watermark found" in capsys.readouterr().out

    assert main(["watermark", "extract", str(tmp_path / "nope.webm")]) == 2
    assert "cannot open" in capsys.readouterr().err

    # The installed entry point end to end, key from the environment.
    done = subprocess.run(
        [sys.executable, "-m", "finrtc", "watermark", "extract", str(marked_path)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, KEY_ENV: "bank-secret"},
    )
    assert done.returncode == EXIT_FOUND, done.stderr
    assert f"live watermark {MARK:08x}" in done.stdout


def test_cli_embed_marks_a_copy(
    astronaut_frames: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "clean.webm"
    write_vp8_webm(astronaut_frames[:30], source, bitrate=1_000_000)
    destination = tmp_path / "for-auditor.webm"
    assert main(["watermark", "embed", str(source), str(destination), "--id", "0badcafe"]) == 0
    marks = scan_file(destination).marks
    assert [(m.channel, m.id) for m in marks] == [(watermark.Channel.RECIPIENT, 0x0BADCAFE)]
    assert main(["watermark", "embed", str(source), str(destination), "--id", "xyz"]) == 2
    assert "--id" in capsys.readouterr().err


def make_hook(events: list[HookEvent], **options: object) -> ForensicWatermark:
    validated = ForensicWatermarkOptions.model_validate(options)
    return ForensicWatermark(validated, HookContext(TRACK, "forensic_watermark", events.append))


def test_hook_assigns_and_announces_ids_per_time_bucket(astronaut_frames: list) -> None:
    events: list[HookEvent] = []
    hook = make_hook(events, key="k", time_bucket_s=3600)
    start = 1_800_000_000.0 - 1.0  # one second before a bucket boundary (divisible by 3600)
    lumas = []
    for index, (y, u, v) in enumerate(astronaut_frames[:60]):
        y = y.copy()
        media_time = index / 30
        hook.process_video(VideoFrame(y, u, v, 640, 480, media_time, start + media_time, index))
        lumas.append(y)
    assert [event.type for event in events] == ["watermark_assigned", "watermark_assigned"]
    first, second = (event.data for event in events)
    assert first["id"] != second["id"]
    assert first["session_id"] == "session-1" and first["participant"] == "alice"
    assert second["time_bucket_start"] == "2027-01-15T08:00:00Z"
    assert events[1].media_time == pytest.approx(1.0)
    expected = watermark.derive_mark_id(b"k", "live", "session-1", "alice", str(1_800_000_000 // 3600))
    assert int(str(second["id"]), 16) == expected == hook.mark_id
    result = watermark.extract(lumas[30:], key=b"k")
    assert result is not None and result.id == expected


def test_hook_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="strength"):
        ForensicWatermarkOptions.model_validate({"strength": 0})
    with pytest.raises(ValueError, match="extra"):
        ForensicWatermarkOptions.model_validate({"strenght": 2.0})


def test_forensic_watermark_passes_the_contract_helper() -> None:
    report = check_hook(ForensicWatermark, {"key": "k"}, budget_tolerance=2.0)
    assert report.event_types() == ["watermark_assigned"]
