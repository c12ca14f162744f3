"""Per-recipient forensic marks on exports: a leaked copy names who received it.

Live subscribers all get the same encoded packets, so live marks can only name the session and
publisher. An export is re-encoded anyway, so it can carry the recipient's own ID on top.
Audio is copied untouched; every video frame is decoded, marked in its luma, and re-encoded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from finrtc.errors import ArchiveError
from finrtc.forensics import watermark
from finrtc.forensics.video import plane_rows
from finrtc.forensics.watermark import Channel, Embedder

EXPORT_BITRATE = 1_000_000


@dataclass(frozen=True)
class RecipientMark:
    recipient: str
    session: str
    mark_id: int

    def to_json(self) -> dict[str, str]:
        return {
            "recipient": self.recipient,
            "session": self.session,
            "mark_id": watermark.format_mark_id(self.mark_id),
            "channel": str(Channel.RECIPIENT.name.lower()),
        }


def mark_export(
    source: Path, destination: Path, recipient: str, session_id: str, key: bytes
) -> RecipientMark:
    """Re-encode `source` (a finrtc export) into `destination` with `recipient`'s mark."""
    if not recipient.strip():
        raise ArchiveError("--mark-for needs a recipient name")
    mark = RecipientMark(recipient, session_id, watermark.recipient_mark_id(key, session_id, recipient))
    embedder = Embedder(mark.mark_id, key=key, channel=Channel.RECIPIENT)
    temp = destination.with_name(f".{destination.name}.marking")
    try:
        with av.open(str(source)) as reader, av.open(str(temp), "w", format="webm") as writer:
            outputs: dict[int, Any] = {}
            stream: Any
            out: Any
            for stream in reader.streams:
                if stream.type == "video":
                    out = writer.add_stream("libvpx", rate=30)
                    out.width = stream.codec_context.width
                    out.height = stream.codec_context.height
                    out.pix_fmt = "yuv420p"
                    out.bit_rate = EXPORT_BITRATE
                    out.time_base = stream.time_base
                    out.codec_context.time_base = stream.time_base
                    out.options = {"deadline": "good", "cpu-used": "4", "lag-in-frames": "0"}
                    outputs[stream.index] = out
                elif stream.type == "audio":
                    outputs[stream.index] = writer.add_stream_from_template(stream)
            for packet in reader.demux():
                out = outputs.get(packet.stream.index)
                if out is None:
                    continue
                if packet.stream.type == "audio":
                    if packet.size:
                        packet.stream = out
                        writer.mux(packet)
                    continue
                for frame in packet.decode():
                    if not isinstance(frame, av.VideoFrame):
                        continue
                    picture = frame.reformat(format="yuv420p")
                    embedder.embed(plane_rows(picture.planes[0])[:, : picture.width])
                    picture.pts = frame.pts
                    picture.time_base = frame.time_base
                    writer.mux(out.encode(picture))
            for index, out in outputs.items():
                if reader.streams[index].type == "video":
                    writer.mux(out.encode(None))
        os.replace(temp, destination)
    except av.error.FFmpegError as error:
        temp.unlink(missing_ok=True)
        raise ArchiveError(f"cannot mark the export for {recipient!r}: {error}") from None
    marker = destination.with_name(destination.name + ".mark.json")
    marker.write_text(json.dumps(mark.to_json(), indent=2) + "\n", encoding="utf-8")
    return mark
