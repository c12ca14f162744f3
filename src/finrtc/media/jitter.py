"""A video jitter buffer that releases a frame as soon as its last packet arrives.

aiortc's buffer hands a video frame to the decoder only when the first packet of the *next*
frame arrives, which adds a whole frame interval (33 ms at 30 fps) to every hop through the
server. Senders mark the last packet of each frame with the RTP marker bit (RFC 7741 for VP8,
RFC 6184 for H.264): a contiguous run of packets of one timestamp that ends with the marker is a
complete frame and can go now.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver

VIDEO_CAPACITY = 512


class MarkerJitterBuffer(JitterBuffer):
    def __init__(self) -> None:
        super().__init__(capacity=VIDEO_CAPACITY, is_video=True)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame = super()._remove_frame(sequence_number)
        if frame is not None or self._origin is None:
            return frame
        packets = []
        timestamp = None
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                return None
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                # aiortc stores each packet's depayloaded bytes in `_data`.
                payload = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
                return JitterFrame(data=payload, timestamp=timestamp)
        return None


def install(receiver: RTCRtpReceiver) -> None:
    """Replace a video receiver's jitter buffer (before its first packet arrives)."""
    # aiortc offers no way to choose the buffer: set its private attribute, in this one place.
    setattr(receiver, "_RTCRtpReceiver__jitter_buffer", MarkerJitterBuffer())  # noqa: B010
