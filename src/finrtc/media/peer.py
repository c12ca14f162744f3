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
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import H264Profile, candidate_from_sdp, parse_h264_profile_level_id

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


# The video codecs a publisher may send: anything our decoders take (PyAV's h264 decodes every
# profile aiortc negotiates, see aiortc_patches.add_h264_profiles).
PUBLISHER_VIDEO_CODECS = ("video/vp8", "video/h264")
# What the shared H.264 encoder produces (finrtc.media.encoder.H264Encoder).
SENT_H264_PROFILES = (H264Profile.PROFILE_CONSTRAINED_BASELINE, H264Profile.PROFILE_BASELINE)


def codec_name(codec: RTCRtpCodecParameters) -> str:
    """"vp8", "h264", "opus", ... from the codec's MIME type."""
    return codec.mimeType.split("/", 1)[-1].lower()


def _media_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    return [
        c for c in aiortc_patches.negotiated_codecs(transceiver) if c.mimeType.lower() != "video/rtx"
    ]


def _we_can_send(codec: RTCRtpCodecParameters) -> bool:
    if codec.mimeType.lower() != "video/h264":
        return True
    try:
        profile, _level = parse_h264_profile_level_id(str(codec.parameters.get("profile-level-id", "42e01f")))
    except ValueError:
        return False
    return str(codec.parameters.get("packetization-mode", "0")) == "1" and profile in SENT_H264_PROFILES


def choose_publisher_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters:
    """The publisher's most preferred video codec that we decode (offer order = its preference)."""
    for codec in _media_codecs(transceiver):
        if codec.mimeType.lower() in PUBLISHER_VIDEO_CODECS:
            return codec
    raise BadRequestError(
        "the offer's video section has no codec the server decodes: offer VP8, or H.264 with "
        "packetization-mode=1 (profile-level-id 42e01f, 42001f, 4d001f, 640c1f or 64001f)"
    )


def choose_viewer_codec(
    transceiver: RTCRtpTransceiver, kind: MediaKind, preferences: Sequence[str]
) -> RTCRtpCodecParameters:
    """The codec a viewer gets: ours by preference among those it offers (Opus for audio)."""
    offered = _media_codecs(transceiver)
    wanted = ["opus"] if kind is MediaKind.AUDIO else list(preferences)
    for name in wanted:
        for codec in offered:
            if codec_name(codec) == name and _we_can_send(codec):
                return codec
    accepted = "Opus" if kind is MediaKind.AUDIO else " or ".join(
        {"vp8": "VP8", "h264": "H.264 Constrained Baseline (packetization-mode=1)"}[name] for name in wanted
    )
    raise BadRequestError(
        f"the offer's {kind.value} section receives no codec the server sends: offer {accepted}"
    )


def _route_keyframe_requests(sender: RTCRtpSender, track: ForwardedTrack) -> None:
    aiortc_patches.route_keyframe_requests(sender, lambda: track.request_keyframe("pli"))


class PeerConnection:
    """One peer connection: either receives a publisher's tracks or sends forwarded tracks."""

    def __init__(self, media: MediaConfig, on_closed: Callable[[bool], None]) -> None:
        self._media = media
        self._pc = RTCPeerConnection(rtc_configuration(media.ice_servers))
        self._on_closed = on_closed
        self._closed = False
        self._remote_tracks: list[tuple[MediaStreamTrack, RTCRtpReceiver]] = []
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
            receiver = next(t.receiver for t in self._pc.getTransceivers() if t.receiver.track is track)
            self._remote_tracks.append((track, receiver))

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
            hint = ""
            if "description send parameters" in str(error):
                hint = (
                    " (no codec in common: the server takes VP8 or H.264 with packetization-mode=1, "
                    "and Opus; an H.264 fmtp without packetization-mode means mode 0)"
                )
            raise BadRequestError(f"the SDP offer cannot be accepted: {error}{hint}") from None

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
        codecs: dict[RTCRtpReceiver, str] = {}
        for transceiver in self._pc.getTransceivers():
            if transceiver.kind == "video":
                chosen = choose_publisher_codec(transceiver)
                aiortc_patches.answer_with_codec(transceiver, chosen)
            media = _media_codecs(transceiver)
            codecs[transceiver.receiver] = media[0].mimeType if media else "unknown"
            if transceiver.kind in ("audio", "video"):
                transceiver.direction = "recvonly"
                receive_queue.install(
                    transceiver.receiver,
                    transceiver.kind,
                    metrics.FRAMES_DROPPED.labels(kind=transceiver.kind).inc,
                )
            if transceiver.kind == "video":
                aiortc_patches.set_jitter_buffer(transceiver.receiver, aiortc_patches.MarkerJitterBuffer())
        incoming = [
            IncomingTrack(
                MediaKind(track.kind), track, codecs.get(receiver, "unknown"), _upstream_pli(receiver)
            )
            for track, receiver in self._remote_tracks
        ]
        if not incoming:
            raise BadRequestError("the offer publishes no audio or video track (use sendonly or sendrecv)")
        answer = await self._answer()
        return answer, incoming

    async def accept_subscriber(self, offer_sdp: str, max_packets: int) -> tuple[str, list[ForwardedTrack]]:
        """Answer a viewer's offer with one forwarded track per audio/video section it receives."""
        await self._set_offer(offer_sdp)
        forwarded: list[ForwardedTrack] = []
        for transceiver in self._pc.getTransceivers():
            if transceiver.kind not in ("audio", "video"):
                continue
            kind = MediaKind(transceiver.kind)
            chosen = choose_viewer_codec(transceiver, kind, self._media.video.viewer_codecs)
            aiortc_patches.answer_with_codec(transceiver, chosen)
            track = ForwardedTrack(kind, max_packets, codec=codec_name(chosen))
            sender = self._pc.addTrack(track)
            transceiver.direction = "sendonly"
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
