"""configs/: the reference covers every key at its default; every shipped config validates;
`finrtc config check / defaults / show` behave."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from finrtc import config_cli
from finrtc.config import FinrtcConfig, dev_config, parse_config
from finrtc.hooks.builtin.visible_watermark import VisibleWatermarkOptions
from finrtc.hooks.loader import load_hooks

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
REFERENCE = CONFIGS / "reference.yaml"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
# Collections that are empty (or null) by default: the reference shows one entry, marked
# "EXAMPLE:", so the keys of their items are documented too.
EXAMPLE_PATHS = (
    ("media", "ice_servers"),
    ("hooks",),
    ("archive", "storage", "s3"),
    ("archive", "targets"),
    ("webhooks", "endpoints"),
)
SECRETS = {
    "FINRTC_API_SECRET": "api-" + "a" * 44,
    "FINRTC_WEBHOOK_SECRET": "wh-" + "b" * 44,
    "FINRTC_WEBHOOK_CRM_SECRET": "crm-" + "c" * 44,
    "FINRTC_WEBHOOK_SURVEILLANCE_SECRET": "sv-" + "d" * 44,
}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def submodels(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """(container kind, model) pairs reachable from a field annotation."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("single", annotation)]
    if origin in (typing.Union, types.UnionType):
        found = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                found.extend(submodels(arg))
        return found
    if origin is list:
        return [("list", model) for _, model in submodels(typing.get_args(annotation)[0])]
    if origin is dict:
        return [("dict", model) for _, model in submodels(typing.get_args(annotation)[1])]
    return []


def missing_keys(model: type[BaseModel], data: Any, path: str) -> list[str]:
    if not isinstance(data, dict):
        return [f"{path or '<root>'} (a mapping documenting {model.__name__})"]
    missing = []
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        if name not in data:
            missing.append(key)
            continue
        value = data[name]
        for kind, sub in submodels(field.annotation):
            if kind == "single":
                missing.extend(missing_keys(sub, value, key))
            elif kind == "list":
                if not value:
                    missing.append(f"{key}[0] (an example item documenting {sub.__name__})")
                for index, item in enumerate(value or []):
                    missing.extend(missing_keys(sub, item, f"{key}[{index}]"))
            else:
                if not value:
                    missing.append(f"{key}.<name> (an example entry documenting {sub.__name__})")
                for entry, item in (value or {}).items():
                    missing.extend(missing_keys(sub, item, f"{key}.{entry}"))
    return missing


def drop(data: dict[str, Any], path: tuple[str, ...]) -> None:
    for part in path[:-1]:
        data = data[part]
    data.pop(path[-1])


def test_reference_documents_every_key_of_the_model() -> None:
    data = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    missing = missing_keys(FinrtcConfig, data, "")
    assert not missing, "configs/reference.yaml lacks: " + ", ".join(missing)


def test_missing_keys_detects_gaps() -> None:
    # The coverage check itself must be able to fail.
    data = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    baseline = missing_keys(FinrtcConfig, data, "")
    del data["media"]["video"]["cpu_used"]
    data["webhooks"]["endpoints"] = []
    del data["archive"]["retention_classes"]["default"]["days"]
    assert [key for key in missing_keys(FinrtcConfig, data, "") if key not in baseline] == [
        "media.video.cpu_used",
        "archive.retention_classes.default.days",
        "webhooks.endpoints[0] (an example item documenting WebhookEndpoint)",
    ]


def test_reference_values_are_the_defaults() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    parsed = parse_config(yaml.safe_load(text), str(REFERENCE))
    documented = parsed.model_dump(mode="json")
    defaults = FinrtcConfig().model_dump(mode="json")
    for path in EXAMPLE_PATHS:
        drop(documented, path)
        drop(defaults, path)
    assert documented == defaults
    assert text.count("# EXAMPLE:") == len(EXAMPLE_PATHS)
    # The spelled-out hook options are the hook's own defaults.
    (factory,) = load_hooks(parsed.hooks)
    assert factory.options == VisibleWatermarkOptions()
    assert [h.use for h in parsed.hooks] == [h.use for h in FinrtcConfig().hooks]


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="finrtc")
    config_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.handler(args)
    return result


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_passes_config_check(
    path: Path, secrets_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run("config", "check", str(path))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert f"{path}: OK" in out
    assert "invalid" not in err


def test_shipped_examples_use_their_scripts_and_policies(secrets_env: None) -> None:
    bank = config_cli.check_config_file(CONFIGS / "bank-branch-zh.yaml")
    broker = config_cli.check_config_file(CONFIGS / "broker-mifid-en.yaml")
    assert bank.loaded is not None and broker.loaded is not None
    assert bank.loaded.config.rooms.default_policy.script == "zh_insurance_sale"
    assert broker.loaded.config.rooms.default_policy.script == "mifid_advice_en"
    from finrtc.compliance.script import load_scripts

    base = CONFIGS
    assert load_scripts(dict(bank.loaded.config.compliance.scripts), base)[
        "zh_insurance_sale"
    ].language == "zh"
    assert load_scripts(dict(broker.loaded.config.compliance.scripts), base)[
        "mifid_advice_en"
    ].language == "en"
    # Only deployment artefacts (keys, the Mandarin model) are reported missing, as warnings.
    for warning in bank.warnings + broker.warnings:
        assert "does not exist" in warning, warning


BROKEN = """
server:
  port: "8080"
  hostname: 0.0.0.0
media:
  bind_addresses: [10.0.0.1, 10.0.0.2]
  announced_addresses: [1.2.3.4]
"""

BAD_REFERENCES = """
rooms:
  default_policy:
    script: missing_script
    retention_class: forever
hooks:
  - use: no_such_hook
compliance:
  scripts:
    other: builtin:no_such_script
webhooks:
  endpoints:
    - url: https://backend.example/hooks
      secret_env: FINRTC_TEST_UNSET_WEBHOOK_SECRET
archive:
  storage:
    backend: s3
"""


def test_schema_errors_name_key_paths(
    tmp_path: Path, secrets_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert run("config", "check", str(path)) == 2
    err = capsys.readouterr().err
    assert f"{path}: invalid" in err
    assert "server.port: Input should be a valid integer" in err
    assert "server.hostname: unknown key" in err


def test_semantic_errors_name_key_paths(
    tmp_path: Path, secrets_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "refs.yaml"
    path.write_text(BAD_REFERENCES)
    assert run("config", "check", str(path)) == 2
    err = capsys.readouterr().err
    for expected in (
        "hooks[0] (no_such_hook): unknown hook 'no_such_hook'",
        "compliance.scripts.other: unknown built-in script 'builtin:no_such_script'",
        "webhooks.endpoints[0].secret_env: the environment variable "
        "FINRTC_TEST_UNSET_WEBHOOK_SECRET is not set",
        "rooms.default_policy.script: 'missing_script' is not defined in compliance.scripts",
        "rooms.default_policy.retention_class: 'forever' is not defined",
        "archive.storage.s3: required when archive.storage.backend is s3",
    ):
        assert expected in err


def test_cross_section_checks(tmp_path: Path, secrets_env: None) -> None:
    path = tmp_path / "media.yaml"
    path.write_text(
        "server:\n  cors_allow_origins: ['https://ok.example:8443', '*', 'https://bad.example/']\n"
        "media:\n  bind_addresses: [10.0.0.1, 10.0.0.2]\n  announced_addresses: [host.example]\n"
        "compliance:\n  scripts:\n    zh: "
        + str(CONFIGS / "scripts" / "bank_insurance_zh.yaml")
        + "\n"
    )
    report = config_cli.check_config_file(path)
    assert (
        "media.announced_addresses: 1 address(es) for 2 bind address(es); give one per bind "
        "address, same order" in report.errors
    )
    assert "media.announced_addresses[0]: 'host.example' is not an IP address" in report.errors
    origin_errors = [e for e in report.errors if e.startswith("server.cors_allow_origins")]
    assert len(origin_errors) == 1
    assert origin_errors[0].startswith(
        "server.cors_allow_origins[2]: 'https://bad.example/' is not an origin"
    )
    assert any(
        e.startswith("compliance.scripts.zh: the script is in 'zh' but the recognizer")
        for e in report.errors
    )


def test_missing_secret_and_invalid_yaml_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FINRTC_API_SECRET", raising=False)
    path = tmp_path / "empty.yaml"
    path.write_text("server: {port: 9000}\n")
    assert run("config", "check", str(path)) == 2
    assert "no API secret configured" in capsys.readouterr().err
    path.write_text("server: [unclosed\n")
    assert run("config", "check", str(path)) == 2
    assert "is not valid YAML at line" in capsys.readouterr().err


def test_warnings_and_strict(
    tmp_path: Path, secrets_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "loud.yaml"
    path.write_text(
        "data_dir: " + str(tmp_path / "data") + "\n"
        "server: {host: 0.0.0.0, dev_token_endpoint: true}\n"
        "auth: {api_secret: " + "x" * 40 + "}\n"
        "webhooks: {endpoints: [{url: 'https://b.example/h', secret: " + "y" * 40 + "}]}\n"
    )
    assert run("config", "check", str(path)) == 0
    captured = capsys.readouterr()
    assert "OK (1 hook(s), 0 script(s), 1 webhook endpoint(s), archive local" in captured.out
    assert "webhooks.endpoints[0].secret is written in the YAML" in captured.err
    assert "dev_token_endpoint is on while listening on a non-loopback address" in captured.err
    assert "auth.api_secret is written in the YAML" in captured.err
    assert "archive.signer_key_file" in captured.err
    assert run("config", "check", "--strict", str(path)) == 2


def test_defaults_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("config", "defaults") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert parse_config(printed) == FinrtcConfig()
    assert run("config", "defaults", "--dev") == 0
    printed_dev = yaml.safe_load(capsys.readouterr().out)
    assert parse_config(printed_dev) == dev_config()
    assert printed_dev["server"]["dev_token_endpoint"] is True


def test_show_fills_defaults_and_redacts_secrets(
    tmp_path: Path, secrets_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "inline-" + "s" * 40
    path = tmp_path / "show.yaml"
    path.write_text(
        "auth:\n  api_secret: " + secret + "\n  api_keys: {backend: " + secret + "}\n"
        "webhooks:\n  endpoints:\n    - {url: 'https://b.example/h', secret: " + secret + "}\n"
        "    - {url: 'https://c.example/h', secret_env: FINRTC_WEBHOOK_SECRET}\n"
        "media:\n  ice_servers: [{urls: ['turn:t.example:3478'], username: u, credential: "
        + secret + "}]\n"
        "hooks:\n  - {use: visible_watermark}\n  - {use: forensic_watermark, options: {key: "
        + secret + "}}\n"
    )
    assert run("config", "show", str(path)) == 0
    out = capsys.readouterr().out
    assert secret not in out
    shown = yaml.safe_load(out)
    assert shown["auth"]["api_keys"] == {"backend": "[redacted]"}
    assert shown["webhooks"]["endpoints"][1]["secret_env"] == "FINRTC_WEBHOOK_SECRET"
    assert shown["media"]["ice_servers"][0]["username"] == "u"
    assert shown["server"]["port"] == 8080
    assert shown["hooks"][1]["options"] == {"key": "[redacted]"}
    assert shown["archive"]["signer_key_file"] == "keys/signer.key"
