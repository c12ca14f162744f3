"""Script YAML loading and strict validation with key paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from finrtc.compliance.script import builtin_scripts, load_script, load_scripts
from finrtc.errors import ConfigError
from finrtc.model import Role

REPO = Path(__file__).resolve().parents[2]

GOOD = """
version: 1
name: t
title: Test
language: en
stages:
  - id: hello
    title: Greeting
    role: agent
    phrases: [hello there]
    deadline_s: 30
  - id: ok
    title: Confirmation
    role: customer
    kind: confirmation
    phrases: [i agree]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "script.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_demo_and_shipped_examples_load() -> None:
    assert "demo_insurance_en" in builtin_scripts()
    demo = load_script("builtin:demo_insurance_en")
    assert [stage.id for stage in demo.stages] == [
        "identity", "product", "risk_notice", "exclusions", "customer_confirmation",
    ]
    assert demo.stage("customer_confirmation").negation_sensitive
    assert not demo.stage("risk_notice").negation_sensitive
    mifid = load_script(str(REPO / "configs/scripts/mifid_broker_en.yaml"))
    assert mifid.consent_stage is not None and mifid.consent_stage.id == "recording_consent"
    chinese = load_script("scripts/bank_insurance_zh.yaml", REPO / "configs")
    assert chinese.language == "zh"
    assert "我已了解并同意" in chinese.phrases_for(Role.CUSTOMER)


def test_good_script_and_derived_properties(tmp_path: Path) -> None:
    script = load_script(str(write(tmp_path, GOOD)))
    hello = script.stage("hello")
    assert hello.speaker is Role.AGENT and hello.gated_by_consent and hello.mandatory
    assert "hello there" in hello.prompt_text
    assert script.phrases_for(Role.AGENT) == ["hello there"]


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("    role: agent\n", "    role: boss\n", "stages[0].role"),
        ("    deadline_s: 30", "    deadline_s: -1", "stages[0].deadline_s"),
        ("    deadline_s: 30", "    deadline_s: '30'", "stages[0].deadline_s"),
        ("    phrases: [i agree]", "    phrases: []", "stages[1].phrases"),
        ("    phrases: [i agree]", "    phrases: [i agree]\n    colour: red", "stages[1].colour"),
        ("  - id: hello", "  - id: Hello World", "stages[0].id"),
        ("language: en", "language: fr", "language"),
        ("    kind: confirmation", "    kind: maybe", "stages[1].kind"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, replace: str, by: str, expected: str) -> None:
    assert replace in GOOD
    path = write(tmp_path, GOOD.replace(replace, by))
    with pytest.raises(ConfigError) as caught:
        load_script(str(path))
    assert f"  {expected}:" in str(caught.value)
    assert str(path) in str(caught.value)


def test_duplicate_ids_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used twice"):
        load_script(str(write(tmp_path, GOOD.replace("id: ok", "id: hello"))))
    with pytest.raises(ConfigError, match="line 2"):
        load_script(str(write(tmp_path, "a: [\n")))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_script(str(write(tmp_path, "- 1\n")))
    with pytest.raises(ConfigError, match="does not exist"):
        load_script(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"available: .*demo_insurance_en"):
        load_script("builtin:nope")


def test_load_scripts_prefixes_the_config_key(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("language: en", "language: xx"))
    with pytest.raises(ConfigError) as caught:
        load_scripts({"sales": "script.yaml"}, tmp_path)
    assert str(caught.value).startswith("compliance.scripts.sales: ")
    loaded = load_scripts({"demo": "builtin:demo_insurance_en"}, tmp_path)
    assert loaded["demo"].name == "demo_insurance_en"


def test_cli_checks_scripts_and_prints_model_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from finrtc.compliance import cli
    from finrtc.compliance.recognizer import MANIFEST_NAME, tree_digest

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["compliance", "check-script", "builtin:demo_insurance_en"])
    assert args.handler(args) == 0
    assert "5 stages, 5 mandatory" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("language: en", "language: xx"))
    args = parser.parse_args(["compliance", "check-script", str(bad)])
    with pytest.raises(ConfigError, match="language"):
        args.handler(args)
    (tmp_path / MANIFEST_NAME).write_text("engine: pocketsphinx\n", encoding="utf-8")
    args = parser.parse_args(["compliance", "model-digest", str(tmp_path)])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.strip() == tree_digest(tmp_path)
    args = parser.parse_args(["compliance", "model-digest", str(tmp_path / "none")])
    with pytest.raises(ConfigError, match=MANIFEST_NAME):
        args.handler(args)
