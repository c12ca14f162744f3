"""One segment's plaintext: a packet table plus a WebM (VP8 + Opus) that plays on its own.

Layout of the plaintext (what is hashed, then encrypted)::

    b"FINRTCSEG1"  u32 big-endian header length  header (canonical JSON)  WebM bytes

The header lists the tracks and, for every packet in mux order, its track, sequence, pts, time
base, keyframe flag, wall-clock and SHA-256. WebM cannot carry sequence numbers or wall-clock
times, and its timestamps are rounded to milliseconds, so the table is what lets a verifier
re-derive the Merkle root and then prove that the WebM holds exactly those packet bytes.
Timestamps in the WebM are session time (0 = session start), so segments line up when joined.
"""

from __future__ import annotations

import fractions
import hashlib
import io
import json
import struct
from dataclasses import dataclass
from typing import Any

import av

from finrtc.archive.merkle import packet_leaf
from finrtc.archive.records import canonical
from finrtc.model import EncodedPacket, MediaKind

MAGIC = b"FINRTCSEG1"
_LENGTH = struct.Struct(">I")


@dataclass
class TrackMeta:
    track_id: str
    kind: MediaKind
    participant: str
    role: str
    width: int = 0
    height: int = 0
    sample_rate: int = 48000
    channels: int = 2

    @property
    def codec(self) -> str:
        """The codec of this track inside the segment container (the archive is VP8 + Opus)."""
        return "vp8" if self.kind is MediaKind.VIDEO else "opus"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "track_id": self.track_id,
            "kind": self.kind.value,
            "participant": self.participant,
            "role": self.role,
        }
        if self.kind is MediaKind.VIDEO:
            data.update(codec=self.codec, width=self.width, height=self.height)
        else:
            data.update(codec=self.codec, sample_rate=self.sample_rate, channels=self.channels)
        return data


class SegmentFormatError(Exception):
    """The plaintext is not a well-formed segment (becomes a verification finding)."""


def leaf_for(packet: EncodedPacket, digest: str) -> bytes:
    return packet_leaf(
        packet.track_id, packet.sequence, packet.pts, packet.time_base, packet.keyframe,
        packet.wall_clock, digest,
    )


def build_segment(
    tracks: list[TrackMeta], packets: list[EncodedPacket], digests: list[str]
) -> bytes:
    """Mux `packets` (already in session-time order) into a WebM and prepend the packet table."""
    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="webm")
    streams: dict[str, Any] = {}
    stream_index: dict[str, int] = {}
    used = {packet.track_id for packet in packets}
    for meta in tracks:
        if meta.track_id not in used:
            continue
        if meta.kind is MediaKind.VIDEO:
            stream = container.add_mux_stream("vp8", width=meta.width, height=meta.height)
        else:
            # add_stream (not add_mux_stream) so the container gets the OpusHead extradata.
            layout = "mono" if meta.channels == 1 else "stereo"
            stream = container.add_stream("libopus", rate=meta.sample_rate, layout=layout)
        stream_index[meta.track_id] = len(streams)
        streams[meta.track_id] = stream
    table = []
    for packet, digest in zip(packets, digests, strict=True):
        av_packet = av.Packet(packet.data)
        av_packet.pts = packet.pts
        av_packet.dts = packet.pts
        av_packet.time_base = fractions.Fraction(packet.time_base[0], packet.time_base[1])
        av_packet.is_keyframe = packet.keyframe
        if packet.duration:
            av_packet.duration = packet.duration
        av_packet.stream = streams[packet.track_id]
        container.mux(av_packet)
        table.append(
            [
                stream_index[packet.track_id], packet.track_id, packet.sequence, packet.pts,
                packet.time_base[0], packet.time_base[1], packet.keyframe, packet.wall_clock,
                digest, packet.duration,
            ]
        )
    container.close()
    header = {
        "tracks": [
            {**meta.to_json(), "stream": stream_index[meta.track_id]}
            for meta in tracks
            if meta.track_id in stream_index
        ],
        "packets": table,
    }
    header_bytes = canonical(header)
    return MAGIC + _LENGTH.pack(len(header_bytes)) + header_bytes + buffer.getvalue()


@dataclass
class ParsedPacket:
    stream: int
    track_id: str
    sequence: int
    pts: int
    time_base: tuple[int, int]
    keyframe: bool
    wall_clock: float
    digest: str
    duration: int

    @property
    def media_time(self) -> float:
        return self.pts * self.time_base[0] / self.time_base[1]

    @property
    def end_time(self) -> float:
        return (self.pts + self.duration) * self.time_base[0] / self.time_base[1]

    def leaf(self) -> bytes:
        return packet_leaf(
            self.track_id, self.sequence, self.pts, self.time_base, self.keyframe,
            self.wall_clock, self.digest,
        )


@dataclass
class ParsedSegment:
    tracks: list[dict[str, Any]]
    packets: list[ParsedPacket]
    webm: bytes


def split_segment(plaintext: bytes) -> ParsedSegment:
    if not plaintext.startswith(MAGIC) or len(plaintext) < len(MAGIC) + _LENGTH.size:
        raise SegmentFormatError("not a finrtc segment (bad magic)")
    (length,) = _LENGTH.unpack_from(plaintext, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    if start + length > len(plaintext):
        raise SegmentFormatError("segment header runs past the end of the segment")
    try:
        header = json.loads(plaintext[start : start + length])
        packets = [
            ParsedPacket(
                int(row[0]), str(row[1]), int(row[2]), int(row[3]), (int(row[4]), int(row[5])),
                bool(row[6]), float(row[7]), str(row[8]), int(row[9]),
            )
            for row in header["packets"]
        ]
        tracks = list(header["tracks"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise SegmentFormatError("segment header is not a valid packet table") from None
    return ParsedSegment(tracks, packets, plaintext[start + length :])


def check_container(segment: ParsedSegment) -> list[str]:
    """Demux the WebM and match every packet's bytes and time against the packet table.

    Returns problems found (empty when the container holds exactly the committed packets).
    """
    problems: list[str] = []
    expected: dict[int, list[ParsedPacket]] = {}
    for packet in segment.packets:
        expected.setdefault(packet.stream, []).append(packet)
    seen: dict[int, int] = {}
    try:
        with av.open(io.BytesIO(segment.webm), "r", format="webm") as container:
            if len(container.streams) != len(expected):
                problems.append(
                    f"container has {len(container.streams)} streams, table lists {len(expected)}"
                )
            for demuxed in container.demux():
                if demuxed.size == 0:
                    continue
                index = demuxed.stream.index
                position = seen.get(index, 0)
                seen[index] = position + 1
                rows = expected.get(index, [])
                if position >= len(rows):
                    problems.append(f"stream {index}: packet beyond the committed table")
                    continue
                row = rows[position]
                if hashlib.sha256(bytes(demuxed)).hexdigest() != row.digest:
                    problems.append(
                        f"stream {index} packet {position} ({row.track_id} seq {row.sequence}): "
                        "bytes differ from the committed digest"
                    )
                if demuxed.pts is not None and demuxed.time_base is not None:
                    shown = float(demuxed.pts * demuxed.time_base)
                    if abs(shown - row.media_time) > 0.002:
                        problems.append(
                            f"stream {index} packet {position}: container time {shown:.3f}s, "
                            f"committed {row.media_time:.3f}s"
                        )
    except (av.error.FFmpegError, ValueError) as error:
        problems.append(f"the WebM container cannot be parsed: {error}")
        return problems
    for index, rows in expected.items():
        if seen.get(index, 0) != len(rows):
            problems.append(
                f"stream {index}: container holds {seen.get(index, 0)} packets, "
                f"table commits to {len(rows)}"
            )
    return problems
