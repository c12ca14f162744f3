"""`finrtc compliance` subcommands: check scripts, pin a recognizer model folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from finrtc.compliance.recognizer import MANIFEST_NAME, tree_digest
from finrtc.compliance.script import load_script
from finrtc.errors import ConfigError


def _check_scripts(args: argparse.Namespace) -> int:
    for reference in args.scripts:
        script = load_script(reference)
        mandatory = sum(1 for stage in script.stages if stage.mandatory)
        print(
            f"{reference}: ok — {script.name} ({script.language}), {len(script.stages)} stages, "
            f"{mandatory} mandatory"
        )
    return 0


def _model_digest(args: argparse.Namespace) -> int:
    folder: Path = args.model_dir
    if not (folder / MANIFEST_NAME).is_file():
        raise ConfigError(f"{folder} has no {MANIFEST_NAME}; see docs/compliance.md")
    print(tree_digest(folder))
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("compliance", help="script compliance tools")
    commands = parser.add_subparsers(dest="compliance_command", metavar="COMMAND")
    commands.required = True
    check = commands.add_parser(
        "check-script", help="validate script YAML files (or builtin:NAME)"
    )
    check.add_argument("scripts", nargs="+", metavar="SCRIPT")
    check.set_defaults(handler=_check_scripts)
    digest = commands.add_parser(
        "model-digest",
        help="print the sha256 to pin in compliance.recognizer.model_sha256 for a model folder",
    )
    digest.add_argument("model_dir", type=Path, metavar="DIR")
    digest.set_defaults(handler=_model_digest)
