"""Memory of `finrtc serve --workers 1` vs `--workers 2`: RSS and PSS of the server's process
tree, idle and under 1-2 calls, split by process (front listener, each media worker, each
worker's speech-recognition process and multiprocessing's resource tracker), plus what the
face detector (OpenCV + one Haar cascade per video track, in the worker process) and the
speech recognizer cost on their own.

RSS counts a page once per process that maps it, so shared libraries and the interpreter are
counted N times in a tree of N processes; PSS (/proc/PID/smaps_rollup) splits each shared page
between its users, so the PSS of a tree is what it really takes.

  python -m benchmarks.memory_bench [--out FILE] [--variants F1,F1W2,F2,F2W2] [--calls 0,1,2]

Each point starts a fresh server pinned to every core (like the calls sweep), waits for /readyz
(every worker ready), then either waits idle (`calls` 0) or runs the load generator's calls
scenario; the snapshot is taken at the end of the window. Results JSON goes to
benchmarks/results/memory-workers-<UTC time>.json by default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import process_tree
from benchmarks.loadgen import by_process
from benchmarks.variants import (
    DEFAULT_F1_CONFIG,
    DEFAULT_F2_CONFIG,
    REPO_DIR,
    Server,
    new_secret,
    prepare_finrtc_config,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IDLE_SETTLE_S = 6.0
WARMUP_S = 4.0
MEASURE_S = 8.0

# Run in a fresh interpreter: PSS/RSS before and after loading what the face_presence hook
# loads (OpenCV, then one Haar cascade per video track).
_FACES_PROBE = """
import json, sys
from benchmarks.common import pss_bytes
import os
def snap():
    with open(f"/proc/{os.getpid()}/status") as handle:
        rss = next(int(l.split()[1]) for l in handle if l.startswith("VmRSS:")) * 1024
    return {"rss_mb": rss / 2**20, "pss_mb": (pss_bytes(os.getpid()) or 0) / 2**20}
base = snap()
import cv2
after_import = snap()
from finrtc.hooks.builtin.face_presence import load_cascade, CASCADE_FILES
detector = next(iter(CASCADE_FILES))
cascades = [load_cascade(detector) for _ in range(4)]
after_4 = snap()
print(json.dumps({"interpreter": base, "after_import_cv2": after_import,
                  "after_4_cascades": after_4, "detector": detector}))
"""


def snapshot(server: Server) -> dict[str, Any]:
    tree = process_tree(server.pid, with_pss=True)
    return {
        "by_process": by_process(tree, tree, 1.0),
        "rss_mb": sum(p["rss_bytes"] for p in tree) / 2**20,
        "pss_mb": sum(p.get("pss_bytes") or 0 for p in tree) / 2**20,
        "processes": [{k: v for k, v in p.items() if k != "cpu_s"} for p in tree],
    }


def run_calls(server: Server, calls: int, work_dir: Path, cores: list[int]) -> dict[str, Any]:
    out = work_dir / f"mem-{server.variant}-{calls}.json"
    command = [
        sys.executable, "-m", "benchmarks.loadgen", "--scenario", "calls", "--count", str(calls),
        "--warmup", str(WARMUP_S), "--measure", str(MEASURE_S), "--out", str(out),
        "--base-url", server.base_url, f"--secret={server.secret}", "--server-pid", str(server.pid),
    ]
    subprocess.run(
        ["taskset", "-c", ",".join(map(str, cores)), *command],
        cwd=REPO_DIR, check=True, timeout=180, capture_output=True,
    )
    point: dict[str, Any] = json.loads(out.read_text())
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--variants", default="F1,F1W2,F2,F2W2")
    parser.add_argument("--calls", default="0,1,2")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    call_counts = [int(c) for c in args.calls.split(",") if c]
    cores = sorted(os.sched_getaffinity(0))
    results: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": cores,
        "points": [],
    }
    probe = subprocess.run(
        [sys.executable, "-c", _FACES_PROBE], cwd=REPO_DIR, capture_output=True, text=True, check=True
    )
    results["face_detector_probe"] = json.loads(probe.stdout)
    print("face detector probe:", results["face_detector_probe"], flush=True)
    with tempfile.TemporaryDirectory(prefix="finrtc-mem-") as tmp:
        work_dir = Path(tmp)
        configs = {
            "F1": prepare_finrtc_config(DEFAULT_F1_CONFIG, work_dir, "F1"),
            "F2": prepare_finrtc_config(DEFAULT_F2_CONFIG, work_dir, "F2"),
        }
        secret = new_secret()
        for variant in variants:
            for calls in call_counts:
                if calls and not variant.startswith("F2"):
                    continue
                server = Server(variant, work_dir, secret, cores, configs)
                try:
                    server.wait_ready()
                    if calls == 0:
                        time.sleep(IDLE_SETTLE_S)
                        point = {"variant": variant, "calls": 0, **snapshot(server)}
                    else:
                        measured = run_calls(server, calls, work_dir, cores)
                        point = {
                            "variant": variant,
                            "calls": calls,
                            "by_process": measured["server"]["by_process"],
                            "rss_mb": measured["server"]["rss_mb_end"],
                            "pss_mb": measured["server"]["pss_mb_end"],
                            "per_worker": measured.get("per_worker"),
                            "connected": measured.get("connected"),
                            "errors": measured.get("errors"),
                        }
                finally:
                    server.stop()
                results["points"].append(point)
                summary = ", ".join(
                    f"{name} {stats['pss_mb']:.0f}/{stats['rss_mb']:.0f}"
                    for name, stats in point["by_process"].items()
                )
                print(
                    f"{variant} calls={calls}: tree PSS {point['pss_mb']:.0f} MB, RSS "
                    f"{point['rss_mb']:.0f} MB; PSS/RSS MB by process: {summary}",
                    flush=True,
                )
    out = args.out or RESULTS_DIR / f"memory-workers-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
