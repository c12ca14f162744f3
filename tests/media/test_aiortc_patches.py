"""One test per patch of aiortc / aioice internals, against the installed releases.

Each test checks that the private name the patch replaces still exists and is still what the
library's own code uses, then that the patch changes the behaviour it is there for. An upgrade
that moves a name fails here, naming the patch, instead of in the middle of a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, rtcpeerconnection
from aiortc import codecs as aiortc_codecs
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from finrtc.media import aiortc_patches
from tests.support.media import PatternVideoTrack
from tests.support.webrtc_client import prefer_video_codec


def _dtls_transport() -> RTCDtlsTransport:
    return RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])


def test_the_installed_versions_are_the_ones_the_patches_were_written_for() -> None:
    aiortc_patches.check_versions()


def test_another_release_stops_start_up_with_the_patches_to_re_read() -> None:
    with pytest.raises(aiortc_patches.UnsupportedLibraryVersionError) as error:
        aiortc_patches.check_versions(lambda package: "2.0.0" if package == "aiortc" else "0.13.0")
    message = str(error.value)
    assert "aiortc 2.0.0" in message and "aiortc_patches.py" in message
    assert "RTCRtpReceiver.__decoder_queue" in message


async def test_decoder_queues_are_the_ones_the_receiver_hands_its_decoder_thread() -> None:
    receiver = RTCRtpReceiver("video", _dtls_transport())
    source = inspect.getsource(RTCRtpReceiver)
    assert "self.__decoder_queue," in source and "self.__decoder_error," in source
    assert aiortc_patches.decoder_error_flag(receiver) is receiver._RTCRtpReceiver__decoder_error
    bounded: Any = object()
    aiortc_patches.set_decoder_queue(receiver, bounded)
    assert receiver._RTCRtpReceiver__decoder_queue is bounded


async def test_the_decoded_queue_is_the_one_the_remote_track_reads() -> None:
    receiver = RTCRtpReceiver("video", _dtls_transport())
    receiver._track = RemoteStreamTrack(kind="video")  # what RTCPeerConnection does for an offer
    assert "await self._queue.get()" in inspect.getsource(RemoteStreamTrack.recv)
    assert "self._track._queue," in inspect.getsource(RTCRtpReceiver)  # handed to the decoder
    replacement: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    replacement.put_nowait("frame")
    aiortc_patches.set_decoded_queue(receiver, replacement)
    assert receiver.track._queue is replacement


async def test_the_jitter_buffer_is_the_one_the_receiver_feeds() -> None:
    receiver = RTCRtpReceiver("video", _dtls_transport())
    assert "self.__jitter_buffer.add(packet)" in inspect.getsource(RTCRtpReceiver)
    buffer = aiortc_patches.MarkerJitterBuffer()
    aiortc_patches.set_jitter_buffer(receiver, buffer)
    assert receiver._RTCRtpReceiver__jitter_buffer is buffer
    # The override hooks the method aiortc's buffer calls when a packet completes a frame.
    assert "self._remove_frame(" in inspect.getsource(type(buffer).__mro__[1])


async def test_an_upstream_pli_goes_to_every_active_ssrc_of_the_publisher() -> None:
    receiver = RTCRtpReceiver("video", _dtls_transport())
    sent: list[int] = []

    async def send_rtcp_pli(media_ssrc: int) -> None:
        sent.append(media_ssrc)

    assert inspect.iscoroutinefunction(RTCRtpReceiver._send_rtcp_pli)
    receiver._RTCRtpReceiver__active_ssrc[4242] = datetime.datetime.now()
    receiver._send_rtcp_pli = send_rtcp_pli  # type: ignore[method-assign]
    aiortc_patches.request_upstream_pli(receiver)
    await asyncio.sleep(0)
    assert sent == [4242]


async def test_a_viewers_keyframe_request_reaches_the_shared_encoder() -> None:
    sender = RTCRtpSender("video", _dtls_transport())
    assert "self._send_keyframe()" in inspect.getsource(RTCRtpSender)
    requests: list[str] = []
    aiortc_patches.route_keyframe_requests(sender, lambda: requests.append("pli"))
    sender._send_keyframe()
    assert requests == ["pli"]


def test_host_candidates_are_gathered_on_the_configured_addresses_only() -> None:
    assert "get_host_addresses(" in inspect.getsource(aioice.ice.Connection)
    original = aioice.ice.get_host_addresses
    try:
        aiortc_patches.pin_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    finally:
        aioice.ice.get_host_addresses = original


def _rsa_certificate() -> RTCCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gstreamer-like peer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return RTCCertificate(key=key, cert=cert)


def _handshake(client_cert: RTCCertificate, server_cert: RTCCertificate) -> str:
    """A DTLS handshake in memory between two aiortc contexts; returns the negotiated suite."""
    client = SSL.Connection(client_cert._create_ssl_context(SRTP_PROFILES), None)
    server = SSL.Connection(server_cert._create_ssl_context(SRTP_PROFILES), None)
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(20):
        for side in (client, server):
            with contextlib.suppress(SSL.WantReadError):
                side.do_handshake()
        for source, target in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                target.bio_write(source.bio_read(65536))
        if client.get_cipher_name() and server.get_cipher_name():
            try:
                client.do_handshake()
                server.do_handshake()
            except SSL.WantReadError:
                continue
            return str(client.get_cipher_name())
    raise AssertionError("the DTLS handshake did not complete")


def test_a_peer_with_an_rsa_certificate_completes_the_dtls_handshake() -> None:
    ours = RTCCertificate.generateCertificate()
    theirs = _rsa_certificate()
    before = RTCCertificate._create_ssl_context
    try:
        RTCCertificate._create_ssl_context = aiortc_patches._original_ssl_context  # type: ignore[method-assign]
        with pytest.raises(SSL.Error):
            _handshake(ours, theirs)  # aiortc alone: ECDSA suites only, no shared cipher
        aiortc_patches.accept_rsa_dtls_peers()
        assert _handshake(ours, theirs).startswith("ECDHE-RSA-")
        # Browsers and aiortc peers still get the ECDSA suite with our own certificate.
        assert _handshake(theirs, ours).startswith("ECDHE-ECDSA-")
    finally:
        RTCCertificate._create_ssl_context = before  # type: ignore[method-assign]


async def _offer_to_answerer(profile_level_id: str | None) -> tuple[Any, Any]:
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = offerer.addTransceiver(PatternVideoTrack(), direction="sendonly")
    if profile_level_id is not None:
        prefer_video_codec(transceiver, "video/H264", profile_level_id)
    await offerer.setLocalDescription(await offerer.createOffer())
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await answerer.setRemoteDescription(offerer.localDescription)
    return offerer, answerer


async def test_h264_main_and_high_offers_find_a_common_codec() -> None:
    # The table the negotiation reads is the one the patch extends.
    assert rtcpeerconnection.CODECS is aiortc_codecs.CODECS
    aiortc_patches.add_h264_profiles()
    size = len(aiortc_codecs.CODECS["video"])
    aiortc_patches.add_h264_profiles()
    assert len(aiortc_codecs.CODECS["video"]) == size  # idempotent
    payload_types = [c.payloadType for c in aiortc_codecs.CODECS["video"]]
    assert len(set(payload_types)) == len(payload_types)
    for profile in aiortc_patches.EXTRA_H264_PROFILES:
        offerer, answerer = await _offer_to_answerer(profile)
        try:
            transceiver = answerer.getTransceivers()[0]
            negotiated = aiortc_patches.negotiated_codecs(transceiver)
            assert negotiated[0].mimeType == "video/H264"
            assert negotiated[0].parameters["profile-level-id"] == profile
        finally:
            await offerer.close()
            await answerer.close()


async def test_the_answer_carries_only_the_chosen_codec() -> None:
    # createAnswer lists exactly the transceiver's negotiated codecs.
    assert "fmt=[c.payloadType for c in transceiver._codecs]" in inspect.getsource(rtcpeerconnection)
    offerer, answerer = await _offer_to_answerer(None)
    try:
        transceiver = answerer.getTransceivers()[0]
        negotiated = aiortc_patches.negotiated_codecs(transceiver)
        names = [c.mimeType for c in negotiated]
        assert "video/VP8" in names and "video/H264" in names  # aiortc would answer with all
        h264 = next(c for c in negotiated if c.mimeType == "video/H264")
        aiortc_patches.answer_with_codec(transceiver, h264)
        await answerer.setLocalDescription(await answerer.createAnswer())
        sdp = answerer.localDescription.sdp
        m_line = next(line for line in sdp.splitlines() if line.startswith("m=video"))
        payload_types = m_line.split()[3:]
        rtx = [c.payloadType for c in negotiated if c.parameters.get("apt") == h264.payloadType]
        assert payload_types == [str(h264.payloadType), *map(str, rtx)]
        assert "VP8" not in answerer.localDescription.sdp
    finally:
        await offerer.close()
        await answerer.close()
