"""B0: the baseline, a plain aiortc server doing what the aiortc examples do, and nothing more.

aiohttp offer/answer on the same WHIP/WHEP-shaped URLs as finrtc (so the load generator is shared),
one `MediaRelay` per published source track with `buffered=False` for each subscriber. Every
subscriber's sender therefore decodes nothing itself but *encodes* its own copy of every frame:
that per-subscriber encode is exactly what finrtc's shared encoder avoids.

It is not hobbled: uvloop like finrtc, host candidates pinned to loopback, no STUN. It does not
check tokens (it does nothing a compliance server must do; that is the point of the baseline).
It exposes an event-loop lag histogram under finrtc's metric name so both are measured alike.

Run: python -m benchmarks.baseline_server --host 127.0.0.1 --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from benchmarks.common import install_uvloop, pin_ice_to_loopback

log = logging.getLogger("baseline")

LAG_INTERVAL_S = 0.05


@dataclass
class Publisher:
    pc: RTCPeerConnection
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    relays: dict[str, MediaRelay] = field(default_factory=dict)


@dataclass
class PendingSubscriber:
    pc: RTCPeerConnection
    transceivers: list[RTCRtpTransceiver]


class Baseline:
    def __init__(self) -> None:
        self.publishers: dict[tuple[str, str], Publisher] = {}
        self.waiting: dict[tuple[str, str], list[PendingSubscriber]] = {}
        self.resources: dict[str, RTCPeerConnection] = {}
        self.registry = CollectorRegistry()
        self.lag = Histogram(
            "finrtc_event_loop_lag_seconds",
            "How late the event loop ran a timer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

    @staticmethod
    def _identity(request: web.Request) -> str:
        return request.query.get("identity") or f"anon-{uuid.uuid4().hex[:8]}"

    async def whip(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        identity = request.query.get("identity") or _token_subject(request) or self._identity(request)
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        publisher = Publisher(pc)
        key = (room, identity)
        self.publishers[key] = publisher

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            publisher.tracks[track.kind] = track
            publisher.relays[track.kind] = MediaRelay()

        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        for pending in self.waiting.pop(key, []):
            self._bind(publisher, pending.transceivers)
        resource = uuid.uuid4().hex
        self.resources[resource] = pc
        self._watch(pc, resource, key)
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whip/{room}/{resource}"},
        )

    async def whep(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        participant = request.query.get("participant")
        if not participant:
            raise web.HTTPBadRequest(text="WHEP needs ?participant=<publisher identity>")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        transceivers = pc.getTransceivers()
        for transceiver in transceivers:
            transceiver.direction = "sendonly"
        key = (room, participant)
        publisher = self.publishers.get(key)
        if publisher is not None and publisher.tracks:
            self._bind(publisher, transceivers)
        else:
            self.waiting.setdefault(key, []).append(PendingSubscriber(pc, transceivers))
        await pc.setLocalDescription(await pc.createAnswer())
        resource = uuid.uuid4().hex
        self.resources[resource] = pc
        self._watch(pc, resource, None)
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whep/{room}/{resource}"},
        )

    @staticmethod
    def _bind(publisher: Publisher, transceivers: list[RTCRtpTransceiver]) -> None:
        for transceiver in transceivers:
            track = publisher.tracks.get(transceiver.kind)
            if track is None:
                continue
            relayed = publisher.relays[transceiver.kind].subscribe(track, buffered=False)
            transceiver.sender.replaceTrack(relayed)

    def _watch(self, pc: RTCPeerConnection, resource: str, key: tuple[str, str] | None) -> None:
        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._close(resource, key)

    async def _close(self, resource: str, key: tuple[str, str] | None) -> None:
        pc = self.resources.pop(resource, None)
        if key is not None and key in self.publishers and self.publishers[key].pc is pc:
            del self.publishers[key]
        if pc is not None:
            await pc.close()

    async def delete(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        if resource not in self.resources:
            raise web.HTTPNotFound()
        room = request.match_info["room"]
        pc = self.resources[resource]
        key = next((k for k, p in self.publishers.items() if p.pc is pc and k[0] == room), None)
        await self._close(resource, key)
        return web.Response(status=200)

    async def readyz(self, request: web.Request) -> web.Response:
        return web.Response(text="ready")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def lag_monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_INTERVAL_S
            await asyncio.sleep(LAG_INTERVAL_S)
            self.lag.observe(max(0.0, loop.time() - due))

    async def close_all(self) -> None:
        for resource in list(self.resources):
            await self._close(resource, None)


def _token_subject(request: web.Request) -> str | None:
    """The identity in a bearer token, read without verification (the baseline trusts everyone)."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    import jwt

    try:
        claims = jwt.decode(header[7:], options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) else None


def build_app(baseline: Baseline) -> web.Application:
    app = web.Application()
    app.router.add_post("/whip/{room}", baseline.whip)
    app.router.add_post("/whep/{room}", baseline.whep)
    app.router.add_delete("/whip/{room}/{resource}", baseline.delete)
    app.router.add_delete("/whep/{room}/{resource}", baseline.delete)
    app.router.add_get("/readyz", baseline.readyz)
    app.router.add_get("/metrics", baseline.metrics)
    return app


async def serve(host: str, port: int) -> None:
    baseline = Baseline()
    runner = web.AppRunner(build_app(baseline), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    monitor = asyncio.create_task(baseline.lag_monitor())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("baseline listening on http://%s:%d", host, port)
    started = time.monotonic()
    await stop.wait()
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    await baseline.close_all()
    await runner.cleanup()
    log.info("baseline stopped after %.1f s", time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    pin_ice_to_loopback()
    install_uvloop()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
