"""`finrtc watermark extract FILE` and `finrtc watermark embed IN OUT --id ID`.

Exit codes of `extract`: 0 a mark was found (IDs printed), 1 no watermark found, 2 error
(unreadable file, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from finrtc.errors import ConfigError
from finrtc.forensics import watermark
from finrtc.forensics.video import mark_file, scan_file

KEY_ENV = "FINRTC_WATERMARK_KEY"
EXIT_FOUND = 0
EXIT_NOT_FOUND = 1


def _key(args: argparse.Namespace) -> bytes:
    key: str | None = args.key if args.key is not None else os.environ.get(KEY_ENV)
    return key.encode() if key else watermark.DEFAULT_KEY


def _add_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        help=f"the forensic_watermark hook's `key` option (default: ${KEY_ENV}, else the public default key)",
    )


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "watermark", help="find or add forensic (invisible) watermarks in video files"
    )
    commands = parser.add_subparsers(dest="watermark_command", metavar="ACTION")
    commands.required = True

    extract = commands.add_parser(
        "extract",
        help="print the watermark ID(s) in a video file (exit 0 found, 1 none found, 2 error)",
    )
    extract.add_argument("file", type=Path, help="a video file: WebM export, screen recording, ...")
    extract.add_argument("--json", action="store_true", help="print one JSON object")
    extract.add_argument(
        "--window", type=float, default=2.0, help="seconds of video per decoding window (default 2)"
    )
    extract.add_argument("--max-seconds", type=float, default=None, help="only read the first N seconds")
    _add_key_argument(extract)
    extract.set_defaults(handler=run_extract)

    embed = commands.add_parser(
        "embed", help="re-encode a video (VP8 WebM, video only) with an ID in every frame"
    )
    embed.add_argument("source", type=Path)
    embed.add_argument("destination", type=Path)
    embed.add_argument("--id", required=True, help="32-bit ID as 8 hex digits")
    embed.add_argument(
        "--channel", choices=[c.name.lower() for c in watermark.Channel], default="recipient"
    )
    embed.add_argument("--strength", type=float, default=watermark.DEFAULT_STRENGTH)
    embed.add_argument("--bitrate", type=int, default=1_000_000, help="bits per second (default 1000000)")
    _add_key_argument(embed)
    embed.set_defaults(handler=run_embed)


def run_extract(args: argparse.Namespace) -> int:
    if args.window <= 0:
        raise ConfigError("--window must be a positive number of seconds")
    scan = scan_file(args.file, key=_key(args), window_s=args.window, max_seconds=args.max_seconds)
    if args.json:
        print(json.dumps({
            "file": str(args.file),
            "frames": scan.frames,
            "seconds": round(scan.seconds, 3),
            "found": bool(scan.marks),
            "marks": [mark.as_dict() for mark in scan.marks],
        }))
    elif not scan.marks:
        print(f"no watermark found in {args.file} ({scan.frames} frames, {scan.seconds:.1f} s read)")
    else:
        for mark in scan.marks:
            print(
                f"{mark.channel.name.lower()} watermark {mark.id_hex}: confidence {mark.confidence:.2f}, "
                f"estimated bit error rate {mark.ber_estimate:.3f}, "
                f"seen {mark.first_seen_s:.1f}-{mark.last_seen_s:.1f} s in {mark.windows} window(s)"
            )
    return EXIT_FOUND if scan.marks else EXIT_NOT_FOUND


def run_embed(args: argparse.Namespace) -> int:
    try:
        payload = int(args.id, 16)
    except ValueError:
        raise ConfigError(f"--id must be 8 hex digits, got {args.id!r}") from None
    if not 0 <= payload < 1 << 32:
        raise ConfigError(f"--id must fit in 32 bits (8 hex digits), got {args.id!r}")
    if args.strength <= 0:
        raise ConfigError("--strength must be positive")
    frames = mark_file(
        args.source,
        args.destination,
        payload,
        key=_key(args),
        channel=watermark.Channel[args.channel.upper()],
        strength=args.strength,
        bitrate=args.bitrate,
    )
    print(f"wrote {args.destination}: {frames} frames marked with {watermark.format_mark_id(payload)}")
    return 0
