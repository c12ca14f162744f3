"""The shared encoders: one per output codec of a published track, whatever the number of
subscribers (VP8 and, when a viewer needs it, H.264 for video; Opus for audio).

Each returns `av.Packet`s ready for aiortc's packetizer (pts and time_base set) plus the
metadata the archive and post-encode hooks need.
"""

from __future__ import annotations

import fractions
from collections import deque
from typing import Any, TypeAlias

import av
from av.audio.resampler import AudioResampler

# An encoded packet as PyAV hands it out (not bound to a container stream).
AvPacket: TypeAlias = "av.Packet[Any]"

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
AUDIO_FRAME_SAMPLES = 960  # 20 ms, what browsers and aiortc expect for Opus

VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


class VideoEncoder:
    """A realtime video encoder (VP8 here; H264Encoder below). Rebuilt when the input resolution
    changes. Keyframes are forced by the pipeline on a time schedule (segment length) and on
    demand, never by the encoder's own GOP logic."""

    codec_name = "vp8"

    def __init__(self, bitrate_bps: int, cpu_used: int, threads: int) -> None:
        self.bitrate_bps = bitrate_bps
        self.cpu_used = cpu_used
        self.threads = threads
        self._codec: av.VideoCodecContext | None = None
        self.width = 0
        self.height = 0

    def _create(self, width: int, height: int) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.bit_rate = self.bitrate_bps
        # Keyframes are forced by the pipeline (longest spacing, segment boundaries, PLI).
        codec.gop_size = 100_000
        codec.qmin = 4
        codec.qmax = 56
        codec.thread_count = self.threads
        codec.options = {
            "deadline": "realtime",
            "cpu-used": str(self.cpu_used),
            "lag-in-frames": "0",
            "error-resilient": "1",
            "bufsize": str(self.bitrate_bps),
            "minrate": str(self.bitrate_bps),
            "maxrate": str(self.bitrate_bps),
            "undershoot-pct": "95",
            "overshoot-pct": "15",
            "static-thresh": "1",
            "noise-sensitivity": "0",
        }
        return codec

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        codec = self._create(width, height)
        codec.open()
        self.width, self.height = width, height
        return codec

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> list[AvPacket]:
        if self._codec is None or frame.width != self.width or frame.height != self.height:
            self._codec = self._open(frame.width, frame.height)
            keyframe = True
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = self._codec.encode(frame)
        for packet in packets:
            packet.time_base = VIDEO_TIME_BASE
        return packets


H264_NOMINAL_FPS = 30


class H264Encoder(VideoEncoder):
    """H.264 for viewers that only decode H.264, Constrained Baseline (profile-level-id 42e01f
    family: what every WebRTC H.264 decoder must accept) with x264's zero-latency tuning: no
    B-frames and no look-ahead, so each frame's packet leaves with that frame and pts == dts.
    Without a global header x264 repeats SPS/PPS before every IDR, so a viewer can start at any
    keyframe (aiortc's packetizer sends them in a STAP-A with the IDR slice)."""

    codec_name = "h264"

    def _create(self, width: int, height: int) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libx264", "w")
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        # x264's rate control budgets bits per frame from the nominal rate; left unset it takes
        # the 90 kHz time base for a frame rate and starves every frame (7 kbit/s, a grey picture).
        codec.framerate = fractions.Fraction(H264_NOMINAL_FPS, 1)
        codec.bit_rate = self.bitrate_bps
        codec.gop_size = 100_000
        codec.thread_count = self.threads
        codec.profile = "Baseline"
        codec.options = {
            # ultrafast: a 640x480 frame in a few ms on one core; the shared encoder runs once
            # per track, so its cost does not grow with viewers.
            "preset": "ultrafast",
            "tune": "zerolatency",
            # A forced keyframe (a viewer's PLI, a segment boundary) must be an IDR, not an
            # open-GOP I frame a joining decoder cannot start from.
            "forced-idr": "1",
            "bufsize": str(self.bitrate_bps),
            "maxrate": str(self.bitrate_bps),
            # Keyframes come from the pipeline only (x264's scene cuts would add unplanned ones).
            "x264-params": "scenecut=0:keyint=infinite:repeat-headers=1",
            "level": h264_level(width, height),
        }
        return codec


def h264_level(width: int, height: int) -> str:
    """The smallest usual level for the frame size at 30 fps. x264 alone picks one from limits
    it cannot know (it said 6.2 for 640x480 with an infinite GOP); 3.1 is what the answer's
    profile-level-id (42e01f) announces, and covers up to 1280x720."""
    macroblocks = ((width + 15) // 16) * ((height + 15) // 16)
    if macroblocks <= 3_600:
        return "31"
    if macroblocks <= 8_192:
        return "40"
    return "51"


VIDEO_ENCODERS: dict[str, type[VideoEncoder]] = {"vp8": VideoEncoder, "h264": H264Encoder}


class AudioEncoder:
    """Opus encoder: resamples anything to 48 kHz stereo s16 in 20 ms frames first.

    `forward` instead stamps the publisher's packet when the frame needed no resampling."""

    def __init__(self, bitrate_bps: int) -> None:
        self.bitrate_bps = bitrate_bps
        # Opened on the first frame that is encoded: a forwarded track never needs it.
        self._codec: av.AudioCodecContext | None = None
        self._resampler: AudioResampler | None = None
        self._resampler_input: tuple[str, str, int] | None = None
        # libopus delays its output by its look-ahead; hand each packet the pts of the frame it
        # encodes so audio stays on the session clock.
        self._pending_pts: deque[int] = deque(maxlen=64)
        self._next_pts: int | None = None

    def prepare(self, frame: av.AudioFrame, pts: int) -> list[av.AudioFrame]:
        """Resample to 48 kHz stereo s16 in 20 ms frames, stamped on the session clock.

        Samples are stamped contiguously (a sample counter) so Opus frames never overlap; when the
        track clock runs ahead of the counter by more than a frame (loss, a catching-up clock), the
        counter jumps forward to it, leaving a gap rather than letting audio drift from video.
        """
        if (
            self._next_pts is None
            or pts - self._next_pts > AUDIO_FRAME_SAMPLES
            or (self._next_pts - pts > AUDIO_FRAME_SAMPLES * 50)
        ):
            self._next_pts = pts
        frame.pts = None
        prepared = []
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None and (
            shape == ("s16", "stereo", AUDIO_RATE) and frame.samples == AUDIO_FRAME_SAMPLES
        ):
            # aiortc's Opus decoder already delivers this: no resampler (it cost 7 % of a media
            # thread, plus four idle filter-graph threads per track).
            ready = [frame]
        else:
            resampler = self._resampler
            if resampler is None or shape != self._resampler_input:
                # PyAV binds a resampler to its first input's shape. A new shape (a publisher's
                # decoder does not change mid-track in practice) gets a new resampler; the old
                # one's remainder, under 20 ms, is dropped. Once resampling, frames keep going
                # through it so they never overtake the samples it buffers.
                resampler = self._resampler = AudioResampler(
                    format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_FRAME_SAMPLES
                )
                self._resampler_input = shape
            ready = resampler.resample(frame)
        for resampled in ready:
            resampled.pts = self._next_pts
            resampled.time_base = AUDIO_TIME_BASE
            self._next_pts += resampled.samples
            prepared.append(resampled)
        return prepared

    def _open(self) -> av.AudioCodecContext:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = AUDIO_RATE
        codec.layout = "stereo"
        codec.format = "s16"
        codec.bit_rate = self.bitrate_bps
        codec.time_base = AUDIO_TIME_BASE
        codec.options = {"application": "voip", "frame_duration": "20"}
        codec.open()
        return codec

    def encode_prepared(self, frame: av.AudioFrame) -> list[AvPacket]:
        if self._codec is None:
            self._codec = self._open()
        self._pending_pts.append(int(frame.pts or 0))
        packets = list(self._codec.encode(frame))
        for packet in packets:
            packet.pts = self._pending_pts.popleft() if self._pending_pts else packet.pts
            packet.time_base = AUDIO_TIME_BASE
        return packets

    @staticmethod
    def forward(payload: bytes, frame: av.AudioFrame) -> AvPacket:
        """The publisher's own Opus packet for a prepared frame it decoded to, on our clock."""
        packet = av.Packet(payload)
        packet.pts = frame.pts
        packet.duration = frame.samples
        packet.time_base = AUDIO_TIME_BASE
        return packet

    def encode(self, frame: av.AudioFrame, pts: int) -> list[AvPacket]:
        packets: list[AvPacket] = []
        for prepared in self.prepare(frame, pts):
            packets.extend(self.encode_prepared(prepared))
        return packets
