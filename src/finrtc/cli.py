"""The `finrtc` command. Each subsystem registers its own subcommands in its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from finrtc import __version__
from finrtc.errors import FinrtcError

# Modules with `register(subparsers)`; order is the order of `finrtc --help`.
SUBCOMMAND_MODULES = (
    "finrtc.server_cli",
    "finrtc.config_cli",
    "finrtc.archive.cli",
    "finrtc.watermark_cli",
    "finrtc.webhooks.cli",
    "finrtc.compliance.cli",
)

Handler = Callable[[argparse.Namespace], int]

# Native math libraries start a worker thread per core for large array products, and OpenBLAS'
# workers busy-wait between calls: in a media server whose hooks already run on their own
# worker threads, that steals whole cores (measured: 0.37 cores at two calls when one video
# hook used a BLAS product). Set before numpy loads; an operator's own setting wins.
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_native_threads() -> None:
    for name in SINGLE_THREAD_ENV:
        os.environ.setdefault(name, "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finrtc", description="Compliance-first WebRTC media server for financial video calls."
    )
    parser.add_argument("--version", action="version", version=f"finrtc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    limit_native_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except FinrtcError as error:
        print(f"finrtc: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def path_argument(value: str) -> Path:
    return Path(value)


if __name__ == "__main__":
    logging.basicConfig()
    raise SystemExit(main())
