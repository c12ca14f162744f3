"""Maps a track's RTP clock onto the call session's clock.

The RTP clock is smooth but its origin is arbitrary and its rate may drift from real time (a
publisher's capture clock, a client that produces late). Arrival time is real but jittery. A track
clock keeps RTP's smoothness and follows arrival: its offset slews, at most `SLEW` seconds per
second of media, toward the smallest recent (arrival - rtp) difference, i.e. the least delayed
frames. Audio and video of one participant therefore stay aligned on the session clock, and pts
never goes backwards.
"""

from __future__ import annotations

from collections import deque

# How fast media time may run faster or slower than the RTP clock while catching up (30 %):
# enough to follow a client that produces 20 % late, small enough to keep motion natural.
SLEW = 0.3
# The least-delay estimate looks back this far (seconds of media).
WINDOW_S = 0.5
# Beyond this the stream restarted or jumped: re-anchor at once.
RESET_S = 5.0


class TrackClock:
    """`slew` 0 keeps the first anchor (audio: its sample count is its clock; speeding it up would
    stamp more time than the samples hold, i.e. audio drifting from its own timestamps)."""

    def __init__(self, slew: float = SLEW) -> None:
        self._slew = slew
        self._offset: float | None = None
        self._last_rtp: float | None = None
        self._last_media: float = 0.0
        self._recent: deque[tuple[float, float]] = deque()

    def media_time(self, rtp_seconds: float, arrival: float) -> float:
        """Session time of a frame whose RTP time is `rtp_seconds`, read at session time `arrival`."""
        observed = arrival - rtp_seconds
        if self._offset is None or self._last_rtp is None or abs(observed - self._offset) > RESET_S:
            self._offset = observed
            self._recent.clear()
        else:
            self._recent.append((rtp_seconds, observed))
            while self._recent and rtp_seconds - self._recent[0][0] > WINDOW_S:
                self._recent.popleft()
            target = min(value for _, value in self._recent)
            step = self._slew * max(rtp_seconds - self._last_rtp, 0.0)
            self._offset += max(-step, min(step, target - self._offset))
        self._last_rtp = rtp_seconds
        media = max(self._offset + rtp_seconds, self._last_media, 0.0)
        self._last_media = media
        return media
