"""Video-file side of the forensic watermark: read a file's luma, find marks, mark a copy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from numpy.typing import NDArray

from finrtc.errors import FinrtcError
from finrtc.forensics import watermark
from finrtc.forensics.watermark import Channel, ExtractionResult, Extractor


class WatermarkFileError(FinrtcError):
    """A video file could not be read or written for watermark work."""


def luma_planes(path: Path, max_seconds: float | None = None) -> Iterator[tuple[float, NDArray[np.uint8]]]:
    """(time in seconds, Y plane) for each decoded frame of the file's first video stream."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise WatermarkFileError(f"cannot open {path}: {error}; is it a video file?") from None
    with container:
        if not container.streams.video:
            raise WatermarkFileError(f"{path} has no video stream")
        stream = container.streams.video[0]
        time_base = float(stream.time_base) if stream.time_base is not None else 0.0
        try:
            for index, frame in enumerate(container.decode(stream)):
                seconds = float(frame.pts * time_base) if frame.pts is not None else index / 30.0
                if max_seconds is not None and seconds > max_seconds:
                    break
                yield seconds, frame_luma(frame)
        except av.error.FFmpegError as error:
            raise WatermarkFileError(f"cannot decode {path}: {error}") from None


def plane_rows(plane: Any) -> NDArray[np.uint8]:
    """A writable (height, line_size) view of a PyAV plane's buffer; crop to `plane.width`."""
    buffer = np.frombuffer(cast(Any, plane), dtype=np.uint8)
    rows: NDArray[np.uint8] = buffer.reshape(plane.height, plane.line_size)
    return rows


def frame_luma(frame: av.VideoFrame) -> NDArray[np.uint8]:
    """The Y plane of `frame` (any pixel format: screen recordings are often not yuv420p)."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    return plane_rows(plane)[:, : plane.width]


@dataclass
class FoundMark:
    """One ID found in a file, with the time windows it was decoded from."""

    id: int
    channel: Channel
    confidence: float
    ber_estimate: float
    first_seen_s: float
    last_seen_s: float
    windows: int = 0
    frames: int = 0

    @property
    def id_hex(self) -> str:
        return watermark.format_mark_id(self.id)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id_hex,
            "channel": self.channel.name.lower(),
            "confidence": round(self.confidence, 4),
            "ber_estimate": round(self.ber_estimate, 4),
            "first_seen_s": round(self.first_seen_s, 3),
            "last_seen_s": round(self.last_seen_s, 3),
            "windows": self.windows,
            "frames": self.frames,
        }


@dataclass
class FileScan:
    marks: list[FoundMark] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


def scan_file(
    path: Path,
    *,
    key: bytes = watermark.DEFAULT_KEY,
    window_s: float = 2.0,
    max_seconds: float | None = None,
) -> FileScan:
    """Decodes marks window by window (IDs change with the time bucket) and over the whole file.

    The whole-file pass recovers weak marks from long videos; if the windows disagree it mixes
    IDs and fails its CRC, so it never invents one.
    """
    window = Extractor(key)
    whole = Extractor(key)
    found: dict[tuple[Channel, int], FoundMark] = {}
    scan = FileScan()
    window_start = 0.0
    last_time = 0.0

    def record(results: list[ExtractionResult], start: float, end: float) -> None:
        for result in results:
            mark = found.get((result.channel, result.id))
            if mark is None:
                mark = FoundMark(
                    result.id, result.channel, result.confidence, result.ber_estimate, start, end
                )
                found[(result.channel, result.id)] = mark
            if result.confidence > mark.confidence:
                mark.confidence, mark.ber_estimate = result.confidence, result.ber_estimate
            mark.first_seen_s = min(mark.first_seen_s, start)
            mark.last_seen_s = max(mark.last_seen_s, end)
            mark.windows += 1
            mark.frames += result.frames

    for seconds, luma in luma_planes(path, max_seconds):
        if window.frames == 0:
            window_start = seconds
        window.add(luma)
        whole.add(luma)
        scan.frames += 1
        last_time = seconds
        if seconds - window_start >= window_s:
            record(window.results(), window_start, seconds)
            window.reset()
    if window.frames:
        record(window.results(), window_start, last_time)
    if not found and whole.frames:
        record(whole.results(), 0.0, last_time)
    scan.seconds = last_time
    scan.marks = sorted(found.values(), key=lambda mark: (mark.channel, mark.first_seen_s))
    return scan


def mark_file(
    source: Path,
    destination: Path,
    payload: int,
    *,
    key: bytes = watermark.DEFAULT_KEY,
    channel: Channel = Channel.RECIPIENT,
    strength: float = watermark.DEFAULT_STRENGTH,
    bitrate: int = 1_000_000,
) -> int:
    """Re-encodes `source` to a VP8 WebM at `destination` with `payload` in every frame.

    Video only: audio is not copied (the archive export muxes its own audio). Returns the
    number of frames written.
    """
    embedder = watermark.Embedder(payload, key=key, channel=channel, strength=strength)
    try:
        source_container = av.open(str(source))
    except (av.error.FFmpegError, OSError) as error:
        raise WatermarkFileError(f"cannot open {source}: {error}") from None
    written = 0
    with source_container:
        if not source_container.streams.video:
            raise WatermarkFileError(f"{source} has no video stream")
        in_stream = source_container.streams.video[0]
        rate = in_stream.average_rate or 30
        with av.open(str(destination), "w", format="webm") as output:
            out_stream = output.add_stream("libvpx", rate=rate)
            out_stream.width = in_stream.codec_context.width
            out_stream.height = in_stream.codec_context.height
            out_stream.pix_fmt = "yuv420p"
            out_stream.bit_rate = bitrate
            out_stream.options = {"deadline": "realtime", "cpu-used": "4", "lag-in-frames": "0"}
            for frame in source_container.decode(in_stream):
                picture = frame.reformat(format="yuv420p")
                plane = picture.planes[0]
                # The plane's buffer is writable: mark it in place, like the live hook does.
                embedder.embed(plane_rows(plane)[:, : plane.width])
                picture.pts = None
                for packet in out_stream.encode(picture):
                    output.mux(packet)
                written += 1
            for packet in out_stream.encode():
                output.mux(packet)
    return written


def write_vp8_webm(
    frames: Iterable[tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]],
    destination: Path,
    *,
    fps: int = 30,
    bitrate: int = 500_000,
) -> int:
    """Encodes yuv420p planes (Y, U, V) to a VP8 WebM with realtime settings like the server's.

    For tests and tools (`finrtc.hooks.testing.video_from_image` makes such planes).
    """
    written = 0
    with av.open(str(destination), "w", format="webm") as output:
        stream = output.add_stream("libvpx", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate
        stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for y, u, v in frames:
            if written == 0:
                stream.width, stream.height = int(y.shape[1]), int(y.shape[0])
            picture = av.VideoFrame(int(y.shape[1]), int(y.shape[0]), "yuv420p")
            for plane, data in zip(picture.planes, (y, u, v), strict=True):
                plane_rows(plane)[:, : plane.width] = data
            for packet in stream.encode(picture):
                output.mux(packet)
            written += 1
        for packet in stream.encode():
            output.mux(packet)
    return written
