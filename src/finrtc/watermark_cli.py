"""`finrtc watermark ...` subcommands. Filled in by the forensic watermark work."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    del subparsers
