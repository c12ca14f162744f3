"""`finrtc serve` with several media workers or a room directory: the front listener, its
workers and its heartbeat, started and stopped in order."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from finrtc.cluster.front import Front, build_front_app
from finrtc.cluster.node_record import generated_node_id
from finrtc.cluster.supervisor import Supervisor, WorkerStartError
from finrtc.config import LoadedConfig
from finrtc.errors import DirectoryUnavailableError
from finrtc.listener import start_listener, tcp_site, wait_for_stop
from finrtc.logging_setup import set_process_fields

# Beyond the rooms' own drain: a worker also closes its services (recognizers, webhooks).
WORKER_STOP_MARGIN_S = 15.0


async def serve_node(loaded: LoadedConfig, workers: int, worker_argv: Sequence[str]) -> int:
    settings = loaded.config.cluster
    node_id = settings.node_id or generated_node_id()
    set_process_fields(node=node_id, worker="front")
    directory = None
    if settings.redis_url:
        try:
            from finrtc.cluster.directory import RoomDirectory
        except ImportError:
            print("finrtc: error: cluster.redis_url needs the `redis` package: "
                  "pip install 'finrtc[cluster]'", file=sys.stderr)
            return 2
        directory = RoomDirectory(settings, node_id)
        try:
            await directory.check()
        except DirectoryUnavailableError as error:
            await directory.close()
            print(f"finrtc: error: {error}", file=sys.stderr)
            return 2
    # Private (0700) folder for the workers' sockets: only this user can reach their API.
    run_dir = Path(tempfile.mkdtemp(prefix="finrtc-workers-"))
    supervisor = Supervisor(workers, run_dir, worker_argv)
    front = Front(loaded, supervisor, directory, node_id)
    server = loaded.config.server
    where = f"{server.host}:{server.port}"
    runner = await start_listener(build_front_app(front), server, tcp_site(server), where)
    if runner is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return 2
    try:
        try:
            await supervisor.start()
        except WorkerStartError as error:
            print(f"finrtc: error: {error}", file=sys.stderr)
            await supervisor.stop(WORKER_STOP_MARGIN_S)
            return 2
        cluster = f"node {node_id} of the cluster at {settings.redis_url}" if directory else "one node"
        print(f"finrtc listening on {loaded.base_url} — {workers} media worker(s), {cluster}; "
              f"data in {loaded.data_dir}", flush=True)
        await wait_for_stop()
        # Like a single process: not ready first, then every worker drains (recordings sealed)
        # while this listener still forwards their requests.
        front.draining = True
        await supervisor.stop(server.drain_timeout_s + WORKER_STOP_MARGIN_S)
        return 0
    finally:
        await runner.cleanup()
        shutil.rmtree(run_dir, ignore_errors=True)
