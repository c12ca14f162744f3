"""A small typed adapter around aiortc's RTCPeerConnection for publish and subscribe sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiortc import (
    RTCIceCandidate,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from finrtc import metrics
from finrtc.config import MediaConfig
from finrtc.errors import BadRequestError
from finrtc.media import aiortc_patches, receive_queue
from finrtc.media.forwarder import ForwardedTrack
from finrtc.media.ice import announce_addresses, rtc_configuration
from finrtc.model import MediaKind
from finrtc.tasks import spawn

log = logging.getLogger(__name__)

MAX_MEDIA_SECTIONS = 8


@dataclass(frozen=True)
class IncomingTrack:
    kind: MediaKind
    track: MediaStreamTrack
    codec: str
    request_keyframe: Callable[[], None]


def _check_offer(sdp: str) -> None:
    if not sdp.strip().startswith("v=0"):
        raise BadRequestError("the body is not an SDP offer (it must start with 'v=0')")
    media_sections = sum(1 for line in sdp.splitlines() if line.startswith("m="))
    if media_sections == 0:
        raise BadRequestError("the SDP offer has no media section")
    if media_sections > MAX_MEDIA_SECTIONS:
        raise BadRequestError(
            f"the SDP offer has {media_sections} media sections; at most {MAX_MEDIA_SECTIONS}"
        )


def _upstream_pli(receiver: RTCRtpReceiver) -> Callable[[], None]:
    return lambda: aiortc_patches.request_upstream_pli(receiver)


def _video_codec_preferences() -> list[RTCRtpCodecCapability]:
    capabilities = RTCRtpSender.getCapabilities("video")
    return [codec for codec in capabilities.codecs if codec.mimeType in ("video/VP8", "video/rtx")]


def _audio_codec_preferences() -> list[RTCRtpCodecCapability]:
    capabilities = RTCRtpSender.getCapabilities("audio")
    return [codec for codec in capabilities.codecs if codec.mimeType == "audio/opus"]


def _route_keyframe_requests(sender: RTCRtpSender, track: ForwardedTrack) -> None:
    aiortc_patches.route_keyframe_requests(sender, lambda: track.request_keyframe("pli"))


class PeerConnection:
    """One peer connection: either receives a publisher's tracks or sends forwarded tracks."""

    def __init__(self, media: MediaConfig, on_closed: Callable[[bool], None]) -> None:
        self._media = media
        self._pc = RTCPeerConnection(rtc_configuration(media.ice_servers))
        self._on_closed = on_closed
        self._closed = False
        self._incoming: list[IncomingTrack] = []
        self._senders: dict[ForwardedTrack, RTCRtpSender] = {}
        self.connected = asyncio.Event()
        self._connect_timer: asyncio.TimerHandle | None = None

        @self._pc.on("connectionstatechange")
        async def _state_changed() -> None:
            state = self._pc.connectionState
            if state == "connected":
                self.connected.set()
                if self._connect_timer is not None:
                    self._connect_timer.cancel()
            elif state in ("failed", "closed"):
                # failed = ICE consent lost (client vanished); closed = we or the client ended it.
                await self.close(clean=state == "closed")

        @self._pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            kind = MediaKind(track.kind)
            receiver = next(t.receiver for t in self._pc.getTransceivers() if t.receiver.track is track)
            transceiver = next(t for t in self._pc.getTransceivers() if t.receiver is receiver)
            codecs = getattr(transceiver, "_codecs", [])
            codec = codecs[0].mimeType if codecs else "unknown"
            self._incoming.append(IncomingTrack(kind, track, codec, _upstream_pli(receiver)))

    @property
    def state(self) -> str:
        return str(self._pc.connectionState)

    async def _set_offer(self, sdp: str) -> None:
        _check_offer(sdp)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise BadRequestError(f"the SDP offer could not be parsed: {error}") from None
        except Exception as error:  # aiortc raises bare exceptions for unsupported offers
            raise BadRequestError(f"the SDP offer cannot be accepted: {error}") from None

    async def _answer(self) -> str:
        try:
            answer = await self._pc.createAnswer()
            await self._pc.setLocalDescription(answer)
        except Exception as error:
            raise BadRequestError(f"cannot negotiate media with this offer: {error}") from None
        self._connect_timer = asyncio.get_running_loop().call_later(
            self._media.connect_timeout_s, lambda: spawn(self._connect_timeout(), name="connect-timeout")
        )
        sdp = self._pc.localDescription.sdp
        return announce_addresses(sdp, self._media.bind_addresses, self._media.announced_addresses)

    async def _connect_timeout(self) -> None:
        if not self.connected.is_set():
            log.info("peer did not connect within %.0f s", self._media.connect_timeout_s)
            await self.close(clean=False)

    async def accept_publisher(self, offer_sdp: str) -> tuple[str, list[IncomingTrack]]:
        """Answer a publisher's offer; returns the answer and the tracks it will send."""
        await self._set_offer(offer_sdp)
        for transceiver in self._pc.getTransceivers():
            if transceiver.kind in ("audio", "video"):
                transceiver.direction = "recvonly"
                receive_queue.install(
                    transceiver.receiver,
                    transceiver.kind,
                    metrics.FRAMES_DROPPED.labels(kind=transceiver.kind).inc,
                )
            if transceiver.kind == "video":
                aiortc_patches.set_jitter_buffer(transceiver.receiver, aiortc_patches.MarkerJitterBuffer())
        if not self._incoming:
            raise BadRequestError("the offer publishes no audio or video track (use sendonly or sendrecv)")
        answer = await self._answer()
        return answer, list(self._incoming)

    async def accept_subscriber(self, offer_sdp: str, max_packets: int) -> tuple[str, list[ForwardedTrack]]:
        """Answer a viewer's offer with one forwarded track per audio/video section it receives."""
        await self._set_offer(offer_sdp)
        forwarded: list[ForwardedTrack] = []
        for transceiver in self._pc.getTransceivers():
            if transceiver.kind not in ("audio", "video"):
                continue
            kind = MediaKind(transceiver.kind)
            track = ForwardedTrack(kind, max_packets)
            sender = self._pc.addTrack(track)
            transceiver.direction = "sendonly"
            preferences = (
                _video_codec_preferences() if kind is MediaKind.VIDEO else _audio_codec_preferences()
            )
            transceiver.setCodecPreferences(preferences)
            _route_keyframe_requests(sender, track)
            self._senders[track] = sender
            forwarded.append(track)
        if not forwarded:
            raise BadRequestError("the offer receives no audio or video (use recvonly transceivers)")
        answer = await self._answer()
        return answer, forwarded

    async def end_forwarding(self, track: ForwardedTrack) -> None:
        """The publisher behind `track` left: end it and send RTCP BYE so the viewer's track ends."""
        track.end()
        sender = self._senders.pop(track, None)
        if sender is not None:
            with contextlib.suppress(Exception):
                await sender.stop()

    async def add_remote_candidates(
        self, candidates: Sequence[tuple[str | None, int, str]], end_of_candidates: bool
    ) -> int:
        """Trickle ICE (WHIP/WHEP PATCH, RFC 8840): hand the client's late candidates to ICE.

        `candidates` are (mid, m-line index, attribute value after "candidate:"). With BUNDLE
        aiortc applies a candidate to the transport of the section it names. Returns how many
        candidates ICE accepted; raises BadRequestError for a malformed candidate before any
        of the batch is applied.
        """
        parsed: list[RTCIceCandidate] = []
        for mid, index, text in candidates:
            try:
                candidate = candidate_from_sdp(text)
            except (AssertionError, ValueError, IndexError):
                raise BadRequestError(
                    f"malformed ICE candidate {text!r}: expected 'foundation component transport "
                    "priority address port typ type ...' (RFC 8839)"
                ) from None
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = index
            parsed.append(candidate)
        if self._closed:
            return 0
        for candidate in parsed:
            await self._pc.addIceCandidate(candidate)
        if end_of_candidates:
            await self._pc.addIceCandidate(None)
        return len(parsed)

    async def close(self, clean: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        with contextlib.suppress(Exception):
            await self._pc.close()
        self._on_closed(clean)
