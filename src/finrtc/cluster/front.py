"""The front listener of a node with several media workers and/or a Redis room directory.

Every request names its room in the path (`/whip/{room}`, `/whep/{room}/...`,
`/v1/rooms/{room}/...`) or, for `POST /v1/rooms`, in its JSON body. The front sends it to the
process that owns the room:

- a local worker that holds it (open, or recently closed so a late request still learns 410 and
  tokens of a closed room stay revoked) -> proxied over the worker's Unix socket;
- another node (directory) -> proxied to the owner's internal URL, marked so it is never
  forwarded twice. WHIP/WHEP POSTs too, not answered `307`: a redirect to another origin makes
  browsers (Fetch standard) and aiohttp drop the `Authorization` header, so every bearer-token
  client would get 401 from the owner. Only signaling takes the extra hop; the owner's ICE
  candidates are in its SDP answer, so media flows between the client and the owner directly;
- nobody, and the request may create the room (POST /v1/rooms, WHIP POST) -> the least-loaded
  local worker, after claiming the name in the directory.

Requests about no room (tokens, OpenAPI, demo page) go to the least-loaded worker. `GET /v1/rooms`
asks every worker and every live node and merges their answers. Media never passes through
here: each worker's ICE candidates are in the SDP answer it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from finrtc.cluster import cluster_metrics
from finrtc.cluster.metrics_merge import merge
from finrtc.cluster.node_record import NodeRecord
from finrtc.cluster.proxy import FORWARDED_BY, UpstreamError, forward, forward_websocket, is_websocket
from finrtc.cluster.supervisor import WORKER_BASE_URL, Supervisor, Worker
from finrtc.config import LoadedConfig
from finrtc.errors import DirectoryUnavailableError
from finrtc.signaling.context import CONFIG
from finrtc.signaling.http_errors import error_middleware, json_error

if TYPE_CHECKING:
    from finrtc.cluster.directory import RoomDirectory

log = logging.getLogger(__name__)

ROOMS_PATH = "/v1/rooms"
SESSION_KINDS = ("whip", "whep")
METRICS_SCRAPE_TIMEOUT_S = 3.0
# Requests on a room's media or API that outlive this are stuck, not slow (an SDP answer waits
# for ICE gathering, a close for the recording's seal: both well inside it).
UPSTREAM_TIMEOUT_S = 60.0


def room_in_path(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] in SESSION_KINDS and parts[2]:
        return parts[2]
    if len(parts) >= 4 and parts[1] == "v1" and parts[2] == "rooms" and parts[3]:
        return parts[3]
    return None


def _name_in_body(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


class Front:
    def __init__(self, loaded: LoadedConfig, supervisor: Supervisor, directory: RoomDirectory | None,
                 node_id: str) -> None:
        self.loaded = loaded
        self.supervisor = supervisor
        self.directory = directory
        self.node_id = node_id
        self.started_at = time.time()
        self.draining = False
        self._peers: aiohttp.ClientSession | None = None
        self._claimed: set[str] = set()
        self._heartbeat_task: asyncio.Task[None] | None = None
        settings = loaded.config.cluster
        self.public_url = loaded.base_url
        self.internal_url = settings.internal_url or loaded.base_url
        self._peer_timeout_s = settings.peer_timeout_s

    # ---- where a room lives ------------------------------------------------------------------

    def local_owner(self, room: str) -> Worker | None:
        for worker in self.supervisor.workers:
            state = worker.state
            if room in state.rooms or room in state.remembered or room in worker.pending:
                return worker if worker.alive else None
        return None

    def _place(self, room: str) -> Worker | None:
        worker = self.local_owner(room)
        if worker is None:
            worker = self.supervisor.least_loaded()
            if worker is not None:
                worker.pending[room] = time.monotonic()
        return worker

    def held_rooms(self) -> set[str]:
        held: set[str] = set()
        for worker in self.supervisor.workers:
            if worker.alive:
                held |= worker.state.rooms | worker.state.remembered | set(worker.pending)
        return held

    # ---- request handling --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/internal/"):
            return json_error(404, "not_found", f"no route {path}")
        if path == "/healthz":
            return web.json_response({"status": "ok"})
        if path == "/readyz":
            return self._readiness()
        if path == "/metrics":
            return await self._metrics()
        forwarded = FORWARDED_BY in request.headers
        if path == ROOMS_PATH and request.method == "GET":
            return await self._list_rooms(request, forwarded)
        room = room_in_path(path)
        body: bytes | None = None
        creates = False
        if room is not None:
            creates = request.method == "POST" and path == f"/whip/{room}"
        elif path == ROOMS_PATH and request.method == "POST":
            body = await request.read()
            room = _name_in_body(body)
            creates = room is not None
        if room is None:
            return await self._to_worker(request, self.supervisor.least_loaded(), None, body)
        return await self._route_room(request, room, creates, forwarded, body)

    async def _route_room(self, request: web.Request, room: str, creates: bool, forwarded: bool,
                          body: bytes | None) -> web.StreamResponse:
        worker = self.local_owner(room)
        if worker is not None:
            return await self._to_worker(request, worker, room, body)
        if self.directory is not None and not forwarded:
            try:
                owner = await self.directory.owner(room)
                if owner is not None and owner.node_id != self.node_id:
                    return await self._to_node(request, owner, body)
                if creates:
                    claimed_by = await self.directory.claim(room)
                    if claimed_by != self.node_id:
                        winner = await self.directory.owner(room)
                        if winner is not None:
                            return await self._to_node(request, winner, body)
                    self._claimed.add(room)
            except DirectoryUnavailableError as error:
                cluster_metrics.DIRECTORY_ERRORS.labels(operation="route").inc()
                if creates:
                    return json_error(503, "unavailable", str(error), {"Retry-After": "2"})
                log.warning("room directory unreachable; answering locally: %s", error)
        # Awaits above may have let a concurrent request place the room: look again.
        worker = self._place(room) if creates else (self.local_owner(room) or self.supervisor.least_loaded())
        return await self._to_worker(request, worker, room, body)

    async def _to_worker(self, request: web.Request, worker: Worker | None, room: str | None,
                         body: bytes | None) -> web.StreamResponse:
        if worker is None or worker.session is None:
            return json_error(503, "unavailable", "no media worker is ready on this node; retry shortly",
                              {"Retry-After": "2"})
        cluster_metrics.ROUTED.labels(target="worker").inc()
        try:
            if is_websocket(request):
                return await forward_websocket(request, worker.session, WORKER_BASE_URL)
            return await forward(request, worker.session, WORKER_BASE_URL, body=body,
                                 timeout_s=UPSTREAM_TIMEOUT_S)
        except UpstreamError as error:
            log.warning("media worker %d did not answer: %s", worker.worker_id, error)
            where = f" holding room {room!r}" if room is not None else ""
            return json_error(503, "unavailable", f"the media worker{where} stopped; its calls ended. "
                              "Retry: the room can be created again", {"Retry-After": "2"})

    async def _to_node(self, request: web.Request, owner: NodeRecord,
                       body: bytes | None) -> web.StreamResponse:
        cluster_metrics.ROUTED.labels(target="node").inc()
        assert self._peers is not None
        extra = {FORWARDED_BY: self.node_id}
        try:
            if is_websocket(request):
                return await forward_websocket(request, self._peers, owner.internal_url, extra_headers=extra)
            return await forward(request, self._peers, owner.internal_url, extra_headers=extra, body=body,
                                 timeout_s=UPSTREAM_TIMEOUT_S)
        except UpstreamError as error:
            log.warning("node %s did not answer: %s", owner.node_id, error)
            return json_error(503, "unavailable", f"the node that holds this room ({owner.node_id}) does "
                              "not answer; retry shortly", {"Retry-After": "2"})

    async def _list_rooms(self, request: web.Request, forwarded: bool) -> web.StreamResponse:
        answers: list[web.Response] = []
        workers = [worker for worker in self.supervisor.workers if worker.usable]
        if not workers:
            return await self._to_worker(request, None, None, None)
        for outcome in await asyncio.gather(
            *(forward(request, w.session, WORKER_BASE_URL, body=b"", timeout_s=self._peer_timeout_s)
              for w in workers if w.session is not None), return_exceptions=True,
        ):
            if isinstance(outcome, web.Response):
                answers.append(outcome)
        if self.directory is not None and not forwarded and self._peers is not None:
            try:
                nodes = [node for node in await self.directory.nodes() if node.node_id != self.node_id]
            except DirectoryUnavailableError as error:
                log.warning("listing rooms of this node only: %s", error)
                nodes = []
            extra = {FORWARDED_BY: self.node_id}
            outcomes = await asyncio.gather(
                *(forward(request, self._peers, node.internal_url, extra_headers=extra, body=b"",
                          timeout_s=self._peer_timeout_s) for node in nodes),
                return_exceptions=True,
            )
            for node, outcome in zip(nodes, outcomes, strict=True):
                if isinstance(outcome, web.Response):
                    answers.append(outcome)
                else:
                    log.warning("node %s left out of the room list: %s", node.node_id, outcome)
        if not answers:
            return json_error(503, "unavailable", "no media worker answered; retry shortly",
                              {"Retry-After": "2"})
        for answer in answers:
            if answer.status != 200:
                return answer  # credentials are checked the same everywhere: one refusal is all
        rooms: list[Any] = []
        for answer in answers:
            assert answer.body is not None and isinstance(answer.body, bytes)
            rooms.extend(json.loads(answer.body).get("rooms", []))
        return web.json_response({"rooms": rooms})

    def _readiness(self) -> web.Response:
        workers = {str(w.worker_id): ("ready" if w.usable else "starting" if w.alive else "restarting")
                   for w in self.supervisor.workers}
        if self.draining:
            return web.json_response({"ready": False, "reason": "draining", "workers": workers}, status=503)
        if not any(w.usable for w in self.supervisor.workers):
            return web.json_response({"ready": False, "reason": "no media worker ready", "workers": workers},
                                     status=503)
        return web.json_response({"ready": True, "node": self.node_id, "workers": workers})

    async def _metrics(self) -> web.Response:
        async def scrape(worker: Worker) -> str | None:
            if worker.session is None or not worker.alive:
                return None
            try:
                timeout = aiohttp.ClientTimeout(total=METRICS_SCRAPE_TIMEOUT_S)
                async with worker.session.get(WORKER_BASE_URL + "/metrics", timeout=timeout) as response:
                    return await response.text() if response.status == 200 else None
            except (TimeoutError, aiohttp.ClientError, OSError):
                return None

        for worker in self.supervisor.workers:
            cluster_metrics.WORKER_UP.labels(media_worker=str(worker.worker_id)).set(1 if worker.alive else 0)
        texts = await asyncio.gather(*(scrape(worker) for worker in self.supervisor.workers))
        expositions = {str(w.worker_id): text for w, text in zip(self.supervisor.workers, texts, strict=True)
                       if text is not None}
        body = await asyncio.to_thread(merge, expositions, cluster_metrics.FRONT_REGISTRY)
        response = web.Response(body=body)
        response.content_type = "text/plain"
        response.charset = "utf-8"
        return response

    # ---- directory heartbeat -----------------------------------------------------------------

    def _record(self) -> NodeRecord:
        workers = self.supervisor.workers
        return NodeRecord(
            node_id=self.node_id, public_url=self.public_url, internal_url=self.internal_url,
            rooms=sum(len(w.state.rooms) for w in workers),
            participants=sum(w.state.participants for w in workers),
            workers=sum(1 for w in workers if w.usable), started_at=self.started_at,
            heartbeat_at=time.time(),
        )

    async def heartbeat_once(self) -> None:
        assert self.directory is not None
        held = self.held_rooms()
        try:
            taken = await self.directory.heartbeat(self._record(), held)
            for room, other in taken.items():
                log.error("room %s is now owned by node %s (this node missed its heartbeat expiry); "
                          "new requests for it go there", room, other)
            await self.directory.release(self._claimed - held)
            self._claimed = held - set(taken)
            cluster_metrics.NODES.set(len(await self.directory.nodes()))
        except DirectoryUnavailableError as error:
            cluster_metrics.DIRECTORY_ERRORS.labels(operation="heartbeat").inc()
            log.warning("heartbeat failed: %s", error)

    async def _heartbeats(self) -> None:
        interval = self.loaded.config.cluster.heartbeat_interval_s
        while True:
            await self.heartbeat_once()
            await asyncio.sleep(interval)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        self._peers = aiohttp.ClientSession(auto_decompress=False)
        if self.directory is not None:
            await self.heartbeat_once()
            self._heartbeat_task = asyncio.create_task(self._heartbeats())
        yield
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        if self.directory is not None:
            await self.directory.leave(self._claimed)
            await self.directory.close()
        await self._peers.close()


def build_front_app(front: Front) -> web.Application:
    # The workers' error middleware, so the front's own refusals (413, bad path names, 503) are
    # the same JSON errors as theirs.
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=front.loaded.config.server.max_body_bytes)
    app[CONFIG] = front.loaded
    app.router.add_route("*", "/{tail:.*}", front.handle)
    app.cleanup_ctx.append(front.context)
    return app
