"""Archive subcommands: `keys generate`, `verify`, `export`, `archive purge|legal-hold`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import VerifyKey

from finrtc.archive import access_log
from finrtc.archive.access_log import Actor
from finrtc.archive.keys import (
    Signer,
    generate_keys,
    load_archive_private_key,
    load_verify_key,
)
from finrtc.archive.retention import (
    PurgeResult,
    lift_legal_hold,
    parse_time,
    place_legal_hold,
    purge,
)
from finrtc.archive.storage import LocalStorage, Storage
from finrtc.archive.timestamping import load_tsa_certificates
from finrtc.archive.verify import (
    EXIT_CANNOT_CHECK,
    VerifyOptions,
    is_clip_package,
    verify_clip_package,
    verify_session,
)
from finrtc.archive.verify_stamps import StampOptions
from finrtc.archive.verify_witness import load_witness
from finrtc.errors import ArchiveError, FinrtcError

# Show progress when a session has at least this many segments (about 2 minutes of media).
PROGRESS_MIN_SEGMENTS = 60


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    keys = subparsers.add_parser("keys", help="manage archive signer / encryption keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    keys_sub.required = True
    generate = keys_sub.add_parser(
        "generate", help="create signer (Ed25519) and archive (X25519) key pairs",
        description="Writes signer.key/signer.pub and archive.key/archive.pub into --out; private "
        "files get mode 0600; existing files are never overwritten.",
    )
    generate.add_argument("--out", type=Path, required=True, help="folder for the four key files")
    generate.set_defaults(handler=_keys_generate)

    verify = subparsers.add_parser(
        "verify", help="check a sealed session offline",
        description="Exit codes: 0 everything holds, 1 tampered or invalid, 2 interrupted (all "
        "sealed segments valid, no final record), 3 cannot check.",
    )
    verify.add_argument("session_dir", type=Path,
                        help="<archive dir>/<room>/<session-id>, or <room>/<session-id> with "
                        "--config")
    verify.add_argument("--config", type=Path,
                        help="read the session in place from the storage (local or S3) of this "
                        "server config")
    _key_arguments(verify, archive_required=False)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--segment", type=int, metavar="K",
                        help="check segment K alone with its Merkle / chain proof")
    verify.add_argument("--tsa-cert", type=Path, metavar="FILE",
                        help="the Time-Stamp Authority's certificate (or its CA), PEM or DER: "
                        "check every record's RFC 3161 token against it")
    verify.add_argument("--max-stamp-delay", type=float, default=60.0, metavar="SECONDS",
                        help="largest time between sealing a record and the TSA's time that "
                        "still anchors it (default 60)")
    verify.add_argument("--stamp-late-after", type=float, default=5.0, metavar="SECONDS",
                        help="a token this much after sealing is reported as stamped late "
                        "(default 5)")
    verify.add_argument("--tsa-policy", metavar="OID",
                        help="require this TSA policy OID in every token")
    verify.add_argument("--witness", type=Path, metavar="FILE",
                        help="archive_chain_head events an outside witness received (JSON or "
                        "JSON lines of webhook bodies): every record must match them")
    _threshold_arguments(verify)
    verify.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _actor_arguments(verify)
    verify.set_defaults(handler=_verify)

    export = subparsers.add_parser(
        "export", help="decrypt a session into one playable WebM plus a verification report",
    )
    export.add_argument("session_dir", type=Path,
                        help="<archive dir>/<room>/<session-id>, or <room>/<session-id> with "
                        "--config")
    export.add_argument("--config", type=Path,
                        help="read the session from the storage (local or S3) of this config")
    export.add_argument("--out", type=Path, required=True,
                        help="output .webm file (with --segment: a new folder for the clip "
                        "package)")
    export.add_argument("--segment", type=int, metavar="K",
                        help="export segment K alone as a self-contained clip package that "
                        "`finrtc verify` checks without any private key")
    _key_arguments(export, archive_required=True)
    _threshold_arguments(export)
    export.add_argument("--quiet", action="store_true", help="no progress on stderr")
    export.add_argument("--reason", required=True,
                        help="why the recording is exported (case, request): signed into the "
                        "session's access log")
    _actor_arguments(export)
    export.add_argument("--mark-for", metavar="NAME",
                        help="re-encode the video with NAME's forensic mark, so a leaked copy "
                        "names its recipient (see `finrtc watermark extract`)")
    export.add_argument("--watermark-key",
                        help="forensic watermark key (default: env FINRTC_WATERMARK_KEY, else "
                        "the default key of the forensic_watermark hook)")
    export.set_defaults(handler=_export)

    archive = subparsers.add_parser("archive", help="retention and legal holds")
    archive_sub = archive.add_subparsers(dest="archive_command", metavar="ACTION")
    archive_sub.required = True
    purge_parser = archive_sub.add_parser(
        "purge", help="crypto-shred sessions past retention (never those under legal hold)",
    )
    where = purge_parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--archive-dir", type=Path,
                       help="a local archive folder (holding <room>/<session-id>/)")
    where.add_argument("--config", type=Path,
                       help="the server's YAML config: its archive storage (local or S3)")
    purge_parser.add_argument("--signer-key", type=Path,
                              help="signer.key: signs the destruction receipts "
                              "(default with --config: archive.signer_key_file)")
    purge_parser.add_argument("--as-of", help="policy time (ISO 8601, default now)")
    purge_parser.add_argument("--dry-run", action="store_true", help="only list what would go")
    purge_parser.add_argument("--json", action="store_true")
    purge_parser.set_defaults(handler=_purge)

    hold = archive_sub.add_parser("legal-hold", help="place or lift a legal hold on a session")
    hold.add_argument("session_dir", type=Path,
                      help="<archive dir>/<room>/<session-id>, or <room>/<session-id> with --config")
    hold.add_argument("--config", type=Path,
                      help="the server's YAML config: use its archive storage (local or S3)")
    mode = hold.add_mutually_exclusive_group(required=True)
    mode.add_argument("--on", dest="hold_on", action="store_true", help="place the hold")
    mode.add_argument("--off", dest="hold_off", action="store_true", help="lift the hold")
    hold.add_argument("--reason", required=True, help="case reference / why (signed, logged)")
    hold.add_argument("--signer-key", type=Path,
                      help="signer.key (default with --config: archive.signer_key_file)")
    _actor_arguments(hold)
    hold.set_defaults(handler=_legal_hold)

    log_parser = archive_sub.add_parser(
        "access-log", help="print a session's signed access log and check its chain",
        description="Exit codes: 0 the chain holds, 1 broken, 3 cannot check.",
    )
    log_parser.add_argument("session_dir", type=Path,
                            help="<archive dir>/<room>/<session-id>, or <room>/<session-id> "
                            "with --config")
    log_parser.add_argument("--config", type=Path,
                            help="read the session from the storage (local or S3) of this config")
    log_parser.add_argument("--signer-key", type=Path, required=True,
                            help="the server's signer.pub (authenticates the manifest the log "
                            "is bound to)")
    log_parser.add_argument("--json", action="store_true")
    log_parser.set_defaults(handler=_access_log)


def _key_arguments(parser: argparse.ArgumentParser, archive_required: bool) -> None:
    parser.add_argument("--signer-key", type=Path, required=True,
                        help="the server's signer.pub (Ed25519 public key)")
    parser.add_argument("--archive-key", type=Path, required=archive_required,
                        help="the operator's archive.key (private) to check the content")


def _actor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actor-key", type=Path, metavar="FILE",
                        help="your Ed25519 key (a signer.key made by `finrtc keys generate`): "
                        "signs your entry in the session's access log")
    parser.add_argument("--actor", metavar="NAME",
                        help="your name in the access log (default: user@host)")


def _actor(args: argparse.Namespace, fallback: Signer | None = None) -> Actor:
    if args.actor_key is not None:
        return Actor.with_key(Signer.from_file(args.actor_key), args.actor)
    if fallback is not None:
        return Actor.with_key(fallback, args.actor or f"signer {fallback.fingerprint}")
    return Actor.unattributed(args.actor)


def _log_access(storage: Storage, prefix: str, actor: Actor, action: str, *,
                reason: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Append to the access log; a read-only copy still verifies (with a warning)."""
    try:
        access_log.append(storage, prefix, actor, action, reason=reason, detail=detail)
    except (FinrtcError, OSError) as error:
        print(f"finrtc: warning: access log not written: {error}", file=sys.stderr)


def _threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-gap", type=float, default=1.0, metavar="SECONDS",
                        help="largest media-time gap that is not a finding (default 1.0)")
    parser.add_argument("--max-drift", type=float, default=0.3, metavar="SECONDS",
                        help="largest A/V drift that is not a finding (default 0.3)")


def _keys_generate(args: argparse.Namespace) -> int:
    paths = generate_keys(args.out)
    print(f"signer (Ed25519):  {paths.signer_key}  (private, 0600)\n"
          f"                   {paths.signer_pub}  (give to auditors)\n"
          f"archive (X25519):  {paths.archive_key}  (private, 0600: keep OFF the server)\n"
          f"                   {paths.archive_pub}  (configure on the server)")
    return 0


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    interactive = sys.stderr.isatty()
    last_decile = [-1]

    def show(done: int, total: int) -> None:
        if total < PROGRESS_MIN_SEGMENTS:
            return
        if interactive:
            end = "\n" if done == total else ""
            print(f"\rverifying segment {done}/{total}", end=end, file=sys.stderr, flush=True)
            return
        decile = done * 10 // total
        if decile != last_decile[0]:
            last_decile[0] = decile
            print(f"verifying: {done}/{total} segments", file=sys.stderr, flush=True)

    return show


def _load_keys(args: argparse.Namespace) -> tuple[VerifyKey, PrivateKey | None]:
    verify_key = load_verify_key(args.signer_key)
    archive_key = load_archive_private_key(args.archive_key) if args.archive_key else None
    return verify_key, archive_key


def _session_storage(args: argparse.Namespace) -> tuple[Storage, str]:
    path: Path = args.session_dir
    if args.config is not None:
        targets, _signer_key = _from_config(args.config)
        prefix = _session_prefix(path)
        return _holding(targets, prefix), prefix
    if not path.is_dir():
        raise ArchiveError(f"{path} is not a folder")
    return LocalStorage(path.resolve(), durable=False), ""


def _session_prefix(path: Path) -> str:
    prefix = path.as_posix().strip("/")
    if prefix.count("/") != 1:
        raise ArchiveError(f"with --config, name the session as <room>/<session-id>, not {path}")
    return prefix


def _verify(args: argparse.Namespace) -> int:
    try:
        verify_key, archive_key = _load_keys(args)
        if args.config is None and is_clip_package(args.session_dir):
            report = verify_clip_package(args.session_dir, verify_key, _stamp_options(args))
            print(json.dumps(report.to_json(), indent=2) if args.json else report.summary())
            return report.exit_code
        storage, prefix = _session_storage(args)
        stamps = _stamp_options(args)
        actor = _actor(args)
        witness = load_witness(args.witness) if args.witness is not None else None
    except FinrtcError as error:
        print(f"finrtc verify: cannot check: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    options = VerifyOptions(
        max_gap_s=args.max_gap, max_drift_s=args.max_drift, segment=args.segment, stamps=stamps,
        witness=witness,
    )
    report = verify_session(storage, prefix, verify_key, archive_key, options,
                            _progress(args.quiet), source=str(args.session_dir))
    if report.room is not None:
        _log_access(storage, prefix, actor,
                    "verify" if args.segment is None else "verify_segment",
                    detail={"result": report.status, "exit_code": report.exit_code,
                            "segment": args.segment, "content": report.content_checked,
                            "timestamps": report.timestamps is not None})
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.summary())
    return report.exit_code


def _stamp_options(args: argparse.Namespace) -> StampOptions | None:
    if args.tsa_cert is None:
        return None
    if args.max_stamp_delay <= 0 or args.stamp_late_after < 0:
        raise ArchiveError("--max-stamp-delay must be > 0 and --stamp-late-after >= 0 seconds")
    return StampOptions(load_tsa_certificates(args.tsa_cert), max_delay_s=args.max_stamp_delay,
                        late_after_s=min(args.stamp_late_after, args.max_stamp_delay),
                        policy_oid=args.tsa_policy)


def _export(args: argparse.Namespace) -> int:
    from finrtc.archive.export import export_clip_package, export_session

    try:
        verify_key, archive_key = _load_keys(args)
        storage, prefix = _session_storage(args)
        actor = _actor(args)
    except FinrtcError as error:
        print(f"finrtc export: cannot check: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    if not args.reason.strip():
        print("finrtc export: --reason must say why the recording is exported", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    assert archive_key is not None
    # Logged before the media leaves the archive: an export that fails midway was still tried.
    _log_access(storage, prefix, actor, "export" if args.segment is None else "export_segment",
                reason=args.reason, detail={"out": args.out.name, "segment": args.segment,
                                            "mark_for": args.mark_for})
    if args.segment is not None:
        try:
            report = export_clip_package(storage, prefix, verify_key, archive_key, args.segment,
                                         args.out, source=str(args.session_dir))
        except ArchiveError as error:
            print(f"finrtc export: {error}", file=sys.stderr)
            return EXIT_CANNOT_CHECK
        print(report.summary())
        print(f"clip package of segment {args.segment} written to {args.out} "
              f"(check it with: finrtc verify {args.out} --signer-key signer.pub)")
        return report.exit_code
    options = VerifyOptions(max_gap_s=args.max_gap, max_drift_s=args.max_drift)
    try:
        result = export_session(storage, prefix, verify_key, archive_key, args.out,
                                options=options, progress=_progress(args.quiet),
                                source=str(args.session_dir))
    except ArchiveError as error:
        print(f"finrtc export: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    print(result.report.summary())
    if args.mark_for:
        from finrtc.archive.recipient_mark import mark_export
        from finrtc.forensics.watermark import DEFAULT_KEY

        key_text = args.watermark_key or os.environ.get("FINRTC_WATERMARK_KEY")
        key = key_text.encode() if key_text else DEFAULT_KEY
        plain = result.output.with_name(f".{result.output.name}.plain")
        os.replace(result.output, plain)
        try:
            mark = mark_export(plain, result.output, args.mark_for, prefix.rsplit("/", 1)[-1], key)
        except ArchiveError as error:
            print(f"finrtc export: {error}", file=sys.stderr)
            return EXIT_CANNOT_CHECK
        finally:
            plain.unlink(missing_ok=True)
        print(f"marked for {mark.recipient!r}: recipient mark {mark.to_json()['mark_id']} "
              f"(recorded in {result.output.name}.mark.json)")
    print(f"exported {result.segments} segment(s), {result.packets} packets to {result.output}\n"
          f"verification report: {result.report_text} / {result.report_json.name}")
    return result.report.exit_code


def _from_config(path: Path) -> tuple[list[Storage], Path]:
    """Every storage target and the default signer key of a server config file."""
    from finrtc.archive.targets import StorageTargets
    from finrtc.config import parse_config, read_yaml

    config = parse_config(read_yaml(path), str(path))
    data_dir = Path(config.data_dir).expanduser()
    if not data_dir.is_absolute():
        data_dir = (path.resolve().parent / data_dir).resolve()
    signer = Path(config.archive.signer_key_file).expanduser()
    targets = [target.storage for target in StorageTargets(config.archive, data_dir).all()]
    return targets, signer if signer.is_absolute() else data_dir / signer


def _holding(targets: list[Storage], prefix: str) -> Storage:
    """The target (residency) holding session `prefix`; the default target when none does."""
    for storage in targets:
        if storage.exists(f"{prefix}/manifest.json"):
            return storage
    return targets[0]


def _signer(args: argparse.Namespace, default: Path | None) -> Signer:
    path = args.signer_key or default
    if path is None:
        raise ArchiveError("--signer-key is required without --config")
    return Signer.from_file(path)


def _purge(args: argparse.Namespace) -> int:
    if args.config is not None:
        targets, default_key = _from_config(args.config)
    else:
        if not args.archive_dir.is_dir():
            raise ArchiveError(f"archive folder {args.archive_dir} does not exist")
        targets, default_key = [LocalStorage(args.archive_dir)], None
    signer = _signer(args, default_key)
    now = parse_time(args.as_of) if args.as_of else None
    # Every residency's target: retention ends the same way wherever a session is kept.
    result = PurgeResult()
    for storage in targets:
        purged = purge(storage, signer, now=now, dry_run=args.dry_run)
        result.outcomes.extend(purged.outcomes)
        for session in purged.purged:
            _log_access(storage, session, Actor.with_key(signer, "purge"), "purge",
                        reason="retention period ended")
    if args.json:
        print(json.dumps([outcome.to_json() for outcome in result.outcomes], indent=2))
    else:
        for outcome in result.outcomes:
            detail = f" ({outcome.detail})" if outcome.detail else ""
            until = f" retain until {outcome.retain_until}" if outcome.retain_until else ""
            print(f"{outcome.action:16} {outcome.session}{until}{detail}")
        print(f"{len(result.purged)} session(s) purged")
    return 0


def _legal_hold(args: argparse.Namespace) -> int:
    if args.config is not None:
        targets, default_key = _from_config(args.config)
        prefix = _session_prefix(args.session_dir)
        storage = _holding(targets, prefix)
    else:
        session = args.session_dir.resolve()
        if not (session / "manifest.json").is_file():
            raise ArchiveError(f"{args.session_dir} is not an archived session folder")
        storage, default_key = LocalStorage(session.parent.parent), None
        prefix = f"{session.parent.name}/{session.name}"
    signer = _signer(args, default_key)
    actor = _actor(args, signer)
    if args.hold_on:
        place_legal_hold(storage, prefix, signer, args.reason)
        _log_access(storage, prefix, actor, "legal_hold_on", reason=args.reason)
        print(f"legal hold placed on {prefix}")
    else:
        lift_legal_hold(storage, prefix, signer, args.reason)
        _log_access(storage, prefix, actor, "legal_hold_off", reason=args.reason)
        print(f"legal hold lifted from {prefix}")
    return 0


def _access_log(args: argparse.Namespace) -> int:
    from finrtc.archive import layout
    from finrtc.archive.records import RecordError, open_record

    try:
        verify_key = load_verify_key(args.signer_key)
        storage, prefix = _session_storage(args)
        manifest = open_record(storage.get(layout.join(prefix, layout.MANIFEST)), verify_key)
    except (FinrtcError, RecordError, FileNotFoundError) as error:
        print(f"finrtc archive access-log: cannot check: {error}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    report = access_log.check(storage, prefix, manifest)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"access log of {manifest.get('room')}/{manifest.get('session_id')}: "
              f"{len(report.entries)} entries, chain " + ("holds" if report.holds else "BROKEN"))
        for line in report.lines():
            print(line)
    return 0 if report.holds else 1
