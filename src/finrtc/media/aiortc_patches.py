"""Every place finrtc reaches into aiortc's or aioice's private internals, in one module.

aiortc has no public API for what an SFU needs (bounded decoder queues, a low-latency jitter
buffer, a PLI towards the publisher, keyframe requests routed to a shared encoder, a choice of
host addresses, DTLS suites for RSA peers). Each patch below is one small function with the reason
it exists; nothing else in finrtc touches an underscore name of aiortc or aioice (a layering test
enforces it). The versions the patches were written and tested against are checked at import: an
upgrade that changes them stops the server at start-up with the list of patches to re-read,
instead of failing in the middle of a call (tests/media/test_aiortc_patches.py has one test per
patch against the installed library).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aiortc import codecs as aiortc_codecs
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from finrtc.errors import FinrtcError
from finrtc.tasks import spawn

# (major, minor) of the releases these patches were written for and tested against.
WRITTEN_FOR = {"aiortc": (1, 16), "aioice": (0, 13)}

PATCHES = (
    "set_decoder_queue / decoder_error_flag: RTCRtpReceiver.__decoder_queue, __decoder_error",
    "set_decoded_queue: the remote track's _queue",
    "set_jitter_buffer / MarkerJitterBuffer: RTCRtpReceiver.__jitter_buffer, JitterBuffer._remove_frame",
    "request_upstream_pli: RTCRtpReceiver.__active_ssrc, _send_rtcp_pli",
    "route_keyframe_requests: RTCRtpSender._send_keyframe",
    "pin_host_addresses: aioice.ice.get_host_addresses",
    "accept_rsa_dtls_peers: RTCCertificate._create_ssl_context",
    "add_h264_profiles: aiortc.codecs.CODECS",
    "negotiated_codecs / answer_with_codec: RTCRtpTransceiver._codecs",
)


class UnsupportedLibraryVersionError(FinrtcError):
    """An aiortc / aioice release other than the one finrtc's patches were written for."""


def check_versions(installed: Callable[[str], str] = importlib.metadata.version) -> None:
    for package, expected in WRITTEN_FOR.items():
        version = installed(package)
        major_minor = tuple(int(part) for part in version.split(".")[:2])
        if major_minor != expected:
            raise UnsupportedLibraryVersionError(
                f"{package} {version} is installed, but finrtc's patches of its internals were "
                f"written for {package} {expected[0]}.{expected[1]}.x. Install that release "
                f"(pip install '{package}=={expected[0]}.{expected[1]}.*'), or re-check each patch "
                f"in finrtc/media/aiortc_patches.py against the new release: " + "; ".join(PATCHES)
            )


check_versions()


# --- bounded queues around the decoder thread (finrtc.media.receive_queue) -------------------


def decoder_error_flag(receiver: RTCRtpReceiver) -> Any:
    """The threading.Event aiortc's decoder thread sets when decoding fails, if any."""
    return getattr(receiver, "_RTCRtpReceiver__decoder_error", None)


def set_decoder_queue(receiver: RTCRtpReceiver, queue: Any) -> None:
    """Replace the unbounded queue.Queue of encoded frames aiortc hands its decoder thread when
    the receiver starts; call before the first packet."""
    setattr(receiver, "_RTCRtpReceiver__decoder_queue", queue)  # noqa: B010


def set_decoded_queue(receiver: RTCRtpReceiver, queue: Any) -> None:
    """Replace the unbounded asyncio.Queue of decoded frames behind the receiver's track."""
    setattr(receiver.track, "_queue", queue)  # noqa: B010


# --- a jitter buffer that releases a frame on its marker bit (finrtc.media.jitter) ------------

VIDEO_JITTER_CAPACITY = 512


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's buffer releases a video frame only when the first packet of the *next* frame
    arrives (a whole frame interval per hop). Senders mark each frame's last packet with the RTP
    marker bit (RFC 7741 for VP8, RFC 6184 for H.264): a contiguous run of packets of one
    timestamp that ends with the marker is a complete frame and goes now."""

    def __init__(self) -> None:
        super().__init__(capacity=VIDEO_JITTER_CAPACITY, is_video=True)

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


def set_jitter_buffer(receiver: RTCRtpReceiver, buffer: JitterBuffer) -> None:
    """aiortc offers no way to choose a receiver's jitter buffer; call before the first packet."""
    setattr(receiver, "_RTCRtpReceiver__jitter_buffer", buffer)  # noqa: B010


# --- keyframes -----------------------------------------------------------------------------------


def request_upstream_pli(receiver: RTCRtpReceiver) -> None:
    """Ask the publisher for a keyframe: aiortc has no public API for a PLI, and only the
    receiver knows the publisher's SSRCs."""
    ssrcs = list(getattr(receiver, "_RTCRtpReceiver__active_ssrc", {}).keys())
    for ssrc in ssrcs:
        spawn(receiver._send_rtcp_pli(ssrc), name="upstream-pli")


def route_keyframe_requests(sender: RTCRtpSender, request_keyframe: Callable[[], None]) -> None:
    """aiortc's own keyframe flag does nothing for pre-encoded packets: send a viewer's PLI/FIR
    to the shared encoder instead."""
    sender._send_keyframe = request_keyframe  # type: ignore[method-assign]


# --- ICE host addresses (finrtc.media.ice) --------------------------------------------------------

_bound_addresses: list[str] = []


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [
        address
        for address in _bound_addresses
        if (use_ipv4 and ":" not in address) or (use_ipv6 and ":" in address)
    ]


def pin_host_addresses(addresses: Sequence[str]) -> None:
    """aioice gathers host candidates on every interface except 127.0.0.1 and has no option to
    choose them: replace its gathering function, process-wide, with the configured addresses
    (like mediasoup's listenIps)."""
    _bound_addresses[:] = list(addresses)
    aioice.ice.get_host_addresses = _configured_host_addresses


# --- DTLS with peers whose certificate is RSA ---------------------------------------------------

# aiortc offers only ECDHE-ECDSA suites. When aiortc is the DTLS client and the peer the server,
# the suite must match the *peer's* certificate, and GStreamer's webrtcbin (simple-whip-client,
# most GStreamer WHIP encoders) presents an RSA one: the handshake failed after ICE completed.
# The server's own certificate stays ECDSA P-256 (aiortc's choice, what browsers use); the list
# adds the RSA twins of the same AEAD suites, strongest first, and keeps aiortc's CBC fallbacks.
DTLS_CIPHERS = b":".join(
    (
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-AES256-GCM-SHA384",
        b"ECDHE-RSA-AES256-GCM-SHA384",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-RSA-CHACHA20-POLY1305",
        b"ECDHE-ECDSA-AES128-SHA",
        b"ECDHE-RSA-AES128-SHA",
        b"ECDHE-ECDSA-AES256-SHA",
        b"ECDHE-RSA-AES256-SHA",
    )
)

_original_ssl_context = RTCCertificate._create_ssl_context


def _ssl_context_for_rsa_and_ecdsa_peers(self: RTCCertificate, srtp_profiles: Any) -> Any:
    context = _original_ssl_context(self, srtp_profiles)
    context.set_cipher_list(DTLS_CIPHERS)
    return context


def accept_rsa_dtls_peers() -> None:
    """Offer ECDHE-RSA suites beside aiortc's ECDHE-ECDSA ones, process-wide (idempotent)."""
    RTCCertificate._create_ssl_context = _ssl_context_for_rsa_and_ecdsa_peers  # type: ignore[method-assign]


# --- codec negotiation per peer (finrtc.media.peer) ------------------------------------------

# aiortc offers and accepts H.264 only as (Constrained) Baseline, and matches profiles exactly:
# an offer of Main or High alone (x264enc's default, OBS, most hardware encoders) had no common
# codec. PyAV's decoder decodes all of them, so the receive side accepts these too; what the
# server *sends* stays Constrained Baseline (finrtc.media.encoder.H264Encoder), chosen per viewer.
EXTRA_H264_PROFILES = ("4d001f", "640c1f", "64001f")


def _next_free_payload_types(used: set[int], count: int) -> list[int]:
    free = [pt for pt in range(96, 128) if pt not in used]
    if len(free) < count:
        raise UnsupportedLibraryVersionError("aiortc's video codec table leaves no free payload type")
    return free[:count]


def add_h264_profiles() -> None:
    """Extend aiortc's process-wide video codec table with H.264 Main, Constrained High and High
    (packetization-mode 1, each with RTX), after aiortc's own entries (idempotent)."""
    table: list[RTCRtpCodecParameters] = aiortc_codecs.CODECS["video"]
    present = {str(c.parameters.get("profile-level-id", "")).lower() for c in table}
    for profile in EXTRA_H264_PROFILES:
        if profile in present:
            continue
        used = {c.payloadType for c in table if c.payloadType is not None}
        payload_type, rtx_type = _next_free_payload_types(used, 2)
        table.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90_000,
                payloadType=payload_type,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                    RTCRtcpFeedback(type="goog-remb"),
                ],
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": profile,
                },
            )
        )
        table.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90_000, payloadType=rtx_type, parameters={"apt": payload_type}
            )
        )


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs both sides support for this transceiver after setRemoteDescription, in the
    offer's order (RTX included). aiortc keeps them in a private list and answers with all."""
    return list(getattr(transceiver, "_codecs", []))


def answer_with_codec(transceiver: RTCRtpTransceiver, codec: RTCRtpCodecParameters) -> None:
    """Answer with `codec` (and its RTX) only; call between setRemoteDescription and createAnswer.

    aiortc's setCodecPreferences only filters *offers* and the remote description applied after
    it, and the transceiver of an incoming offer is created by setRemoteDescription itself: for an
    answer there is no public way to choose. One codec per section also makes the codec a peer
    sends (publisher) or receives (viewer) unambiguous."""
    rtx = [
        c
        for c in negotiated_codecs(transceiver)
        if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == codec.payloadType
    ]
    transceiver._codecs = [codec, *rtx]
