"""`finrtc config check FILE`, `finrtc config defaults [--dev]`, `finrtc config show FILE`.

`check` goes further than parsing: it loads the hooks and the scripts the file names, resolves
every secret, and cross-checks references between sections (a room policy naming a script or a
retention class that does not exist), so a config that passes starts. Errors name the key path.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from finrtc.config import FinrtcConfig, LoadedConfig, dev_config, load_config, read_yaml
from finrtc.errors import ConfigError

if TYPE_CHECKING:
    from finrtc.compliance.script import Script

EXIT_OK = 0
EXIT_INVALID = 2
REDACTED = "[redacted]"
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")
_SECRET_KEYS = ("secret", "credential", "password", "access_key_id")


@dataclass
class ConfigReport:
    """What `check_config_file` found: errors make the file unusable, warnings are advice."""

    source: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""
    loaded: LoadedConfig | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _collect(report: ConfigReport, error: ConfigError) -> None:
    report.errors.append(str(error))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config_file(path: Path, data_dir: str | None = None) -> ConfigReport:
    """Validate `path` as `finrtc serve --config path` would use it, and then some."""
    report = ConfigReport(source=path)
    try:
        loaded = load_config(path, data_dir=data_dir)
    except ConfigError as error:
        _collect(report, error)
        return report
    report.loaded = loaded
    config = loaded.config
    # The file as written, to tell secrets typed into it from references to elsewhere.
    raw = read_yaml(path)
    base_dir = loaded.source.parent if loaded.source is not None else None

    # Imported here: hooks, scripts and the recognizer pull in numpy, OpenCV and pocketsphinx,
    # which `config defaults` and `config show` do not need.
    from finrtc.compliance.script import load_scripts
    from finrtc.hooks.loader import load_hooks
    from finrtc.webhooks.sender import resolve_endpoint_secret

    hooks = []
    try:
        hooks = load_hooks(config.hooks, base_dir)
    except ConfigError as error:
        _collect(report, error)
    try:
        scripts = load_scripts(dict(config.compliance.scripts), base_dir)
    except ConfigError as error:
        _collect(report, error)
        scripts = {}
    if config.compliance.enabled:
        _check_recognizer(config, scripts, base_dir, report)
    for position, endpoint in enumerate(config.webhooks.endpoints):
        try:
            resolve_endpoint_secret(endpoint, position, loaded.api_secret, base_dir)
        except ConfigError as error:
            _collect(report, error)
        if _written_inline(raw, "webhooks", "endpoints", position, "secret"):
            report.warnings.append(
                f"webhooks.endpoints[{position}].secret is written in the YAML; prefer secret_file "
                "or secret_env"
            )
    _cross_check(config, report)
    _advise(loaded, raw, report)
    archive = "off" if not config.archive.enabled else config.archive.storage.backend
    report.summary = (
        f"{len(hooks)} hook(s), {len(config.compliance.scripts)} script(s), "
        f"{len(config.webhooks.endpoints)} webhook endpoint(s), archive {archive}, "
        f"listening on {config.server.host}:{config.server.port}"
    )
    return report


def _check_recognizer(
    config: FinrtcConfig, scripts: dict[str, Script], base_dir: Path | None, report: ConfigReport
) -> None:
    from finrtc.compliance.runtime import load_model

    recognizer = config.compliance.recognizer
    if recognizer.backend == "model_dir" and recognizer.model_dir is not None:
        folder = Path(recognizer.model_dir).expanduser()
        if not folder.is_absolute() and base_dir is not None:
            folder = base_dir / folder
        if not folder.exists():
            # A deployment artefact, like the archive keys: the file itself can still be right.
            report.warnings.append(
                f"compliance.recognizer.model_dir: {folder} does not exist on this machine; "
                "the model and its language were not checked"
            )
            return
    try:
        model = load_model(config.compliance, base_dir)
    except ConfigError as error:
        _collect(report, error)
        return
    for name, script in scripts.items():
        if script.language != model.language:
            report.errors.append(
                f"compliance.scripts.{name}: the script is in {script.language!r} but the "
                f"recognizer model ({model.source}) recognizes {model.language!r}; configure "
                "compliance.recognizer.backend: model_dir with a model of that language"
            )


def _cross_check(config: FinrtcConfig, report: ConfigReport) -> None:
    policy = config.rooms.default_policy
    scripts = config.compliance.scripts
    if policy.script is not None and policy.script not in scripts:
        defined = ", ".join(sorted(scripts)) or "none"
        report.errors.append(
            f"rooms.default_policy.script: {policy.script!r} is not defined in compliance.scripts "
            f"(defined: {defined})"
        )
    classes = config.archive.retention_classes
    if policy.retention_class not in classes:
        report.errors.append(
            f"rooms.default_policy.retention_class: {policy.retention_class!r} is not defined in "
            f"archive.retention_classes (defined: {', '.join(sorted(classes)) or 'none'})"
        )
    storage = config.archive.storage
    if config.archive.enabled and storage.backend == "s3" and storage.s3 is None:
        report.errors.append("archive.storage.s3: required when archive.storage.backend is s3")
    for position, origin in enumerate(config.server.cors_allow_origins):
        if origin != "*" and not _ORIGIN.match(origin):
            report.errors.append(
                f"server.cors_allow_origins[{position}]: {origin!r} is not an origin; write "
                "scheme://host[:port] with no path or trailing slash (browsers send exactly "
                "that and it is compared as is), or \"*\" for any origin"
            )
    media = config.media
    if media.announced_addresses and len(media.announced_addresses) != len(media.bind_addresses):
        report.errors.append(
            f"media.announced_addresses: {len(media.announced_addresses)} address(es) for "
            f"{len(media.bind_addresses)} bind address(es); give one per bind address, same order"
        )
    for position, address in enumerate([*media.bind_addresses, *media.announced_addresses]):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            key = (
                f"media.bind_addresses[{position}]"
                if position < len(media.bind_addresses)
                else f"media.announced_addresses[{position - len(media.bind_addresses)}]"
            )
            report.errors.append(f"{key}: {address!r} is not an IP address")


def _written_inline(raw: Any, *keys: str | int) -> bool:
    """Whether the YAML itself holds a secret at `keys` (not a `${env:...}`-style reference)."""
    node = raw
    for key in keys:
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                return False
        elif not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    if isinstance(node, dict):
        return any(isinstance(v, str) and not v.startswith("${") for v in node.values())
    return isinstance(node, str) and not node.startswith("${")


def _advise(loaded: LoadedConfig, raw: Any, report: ConfigReport) -> None:
    config = loaded.config
    server = config.server
    if not _is_loopback(server.host):
        if server.dev_token_endpoint:
            report.warnings.append(
                "server.dev_token_endpoint is on while listening on a non-loopback address: "
                "anyone who reaches the server can mint tokens"
            )
        if server.demo_page:
            report.warnings.append(
                "server.demo_page is on while listening on a non-loopback address"
            )
    if _written_inline(raw, "auth", "api_secret"):
        report.warnings.append(
            "auth.api_secret is written in the YAML; prefer auth.api_secret_file or the "
            "FINRTC_API_SECRET environment variable"
        )
    if _written_inline(raw, "auth", "api_keys"):
        report.warnings.append(
            "auth.api_keys holds secrets in the YAML; keep the file readable by the server only"
        )
    if _written_inline(raw, "archive", "storage", "s3", "secret_access_key"):
        report.warnings.append(
            "archive.storage.s3.secret_access_key is written in the YAML; prefer the AWS_* "
            "environment variables or an instance role"
        )
    if config.archive.enabled:
        for key, value in (
            ("archive.signer_key_file", [config.archive.signer_key_file]),
            ("archive.archive_public_key_files", config.archive.archive_public_key_files),
        ):
            for name in value:
                resolved = loaded.resolve(name)
                if not resolved.exists():
                    report.warnings.append(
                        f"{key}: {resolved} does not exist yet; create the keys before "
                        f"serving: finrtc keys generate --out {resolved.parent} (then move "
                        "archive.key, the private half, off the server)"
                    )
        stamping = config.archive.timestamping
        if stamping.enabled and stamping.ca_file:
            from finrtc.archive.timestamping import load_tsa_certificates
            from finrtc.errors import ArchiveError

            try:
                load_tsa_certificates(loaded.resolve(stamping.ca_file))
            except ArchiveError as error:
                report.errors.append(f"archive.timestamping.ca_file: {error}")


def redact(data: Any, key: str = "") -> Any:
    """A config dump with secret values replaced, for printing."""
    if isinstance(data, dict):
        if key == "api_keys":
            return {k: REDACTED for k in data}
        return {k: redact(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(item, key) for item in data]
    if data is not None and _is_secret_key(key):
        return REDACTED
    return data


def _is_secret_key(key: str) -> bool:
    # Names of files and variables holding secrets are not secrets themselves.
    if key.endswith(("_file", "_files", "_env")):
        return False
    # "key" / "*_key": e.g. the forensic watermark's `options.key`.
    return key == "key" or key.endswith("_key") or any(word in key for word in _SECRET_KEYS)


def dump_yaml(config: FinrtcConfig, *, hide_secrets: bool) -> str:
    data = config.model_dump(mode="json")
    if hide_secrets:
        data = redact(data)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def run_check(args: argparse.Namespace) -> int:
    report = check_config_file(args.file, data_dir=args.data_dir)
    if report.errors:
        print(f"{args.file}: invalid", file=sys.stderr)
        for error in report.errors:
            for line in error.splitlines():
                print(f"  {line}", file=sys.stderr)
    for warning in report.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    if report.errors:
        return EXIT_INVALID
    if args.strict and report.warnings:
        print(f"{args.file}: warnings count as errors (--strict)", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.file}: OK ({report.summary})")
    return EXIT_OK


def run_defaults(args: argparse.Namespace) -> int:
    config = dev_config() if args.dev else FinrtcConfig()
    header = (
        "# finrtc dev-mode config (what `finrtc serve` without --config runs)\n"
        if args.dev
        else "# finrtc defaults: every key at its default value; see configs/reference.yaml\n"
    )
    sys.stdout.write(header + dump_yaml(config, hide_secrets=False))
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    loaded = load_config(args.file, data_dir=args.data_dir)
    sys.stdout.write(
        f"# effective config of {args.file} (defaults filled in, secrets redacted)\n"
        + dump_yaml(loaded.config, hide_secrets=True)
    )
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "config",
        help="validate a config file or print the default config",
        description="Validate a YAML config file, or print the default or effective config.",
    )
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION")
    actions.required = True

    check = actions.add_parser(
        "check",
        help="validate FILE: schema, hooks, scripts, secrets, cross-references (exit 0 or 2)",
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--data-dir", help="data folder the server would use (for key paths)")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.set_defaults(handler=run_check)

    defaults = actions.add_parser("defaults", help="print the default config as YAML")
    defaults.add_argument(
        "--dev", action="store_true", help="print the dev-mode config used without --config"
    )
    defaults.set_defaults(handler=run_defaults)

    show = actions.add_parser(
        "show", help="print FILE's effective config (defaults filled in, secrets redacted)"
    )
    show.add_argument("file", type=Path, metavar="FILE")
    show.add_argument("--data-dir", help="override data_dir as `finrtc serve --data-dir` would")
    show.set_defaults(handler=run_show)
