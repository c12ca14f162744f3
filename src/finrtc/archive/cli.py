"""Archive subcommands (keys, verify, export, archive purge). Filled in by the archive work."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    del subparsers
