from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from finrtc.config import API_SECRET_ENV, load_config, parse_config
from finrtc.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "finrtc.yaml"
    path.write_text(text)
    return path


def test_defaults_are_loopback_and_no_ice_servers() -> None:
    config = parse_config({})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.media.bind_addresses == ["127.0.0.1"]
    assert config.media.ice_servers == []
    assert config.media.video.viewer_codecs == ["vp8", "h264"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server: {port: '80'}", "server.port: Input should be a valid integer"),
        ("server: {prot: 80}", "server.prot: unknown key"),
        ("media: {ice_servers: [{urls: ['http://x']}]}", "media.ice_servers[0].urls"),
        ("hooks: [{use: visible_watermark, optons: {}}]", "hooks[0].optons: unknown key"),
        ("archive: {segment_seconds: 0}", "archive.segment_seconds"),
        ("- just\n- a list", "top level must be a mapping"),
        ("server: {port: 80", "not valid YAML at line"),
        ("media: {video: {viewer_codecs: [vp9]}}", "media.video.viewer_codecs[0]"),
        ("media: {video: {viewer_codecs: [vp8, vp8]}}", "viewer_codecs lists a codec twice"),
        ("media: {video: {viewer_codecs: []}}", "media.video.viewer_codecs"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, text: str, fragment: str, monkeypatch) -> None:
    monkeypatch.setenv(API_SECRET_ENV, "s" * 40)
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert fragment in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_dev_mode_generates_a_private_secret_and_keeps_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(API_SECRET_ENV, raising=False)
    first = load_config(None, data_dir=str(tmp_path / "d"))
    second = load_config(None, data_dir=str(tmp_path / "d"))
    assert first.dev_mode and first.api_secret == second.api_secret
    secret_file = tmp_path / "d" / "keys" / "api_secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert first.config.server.demo_page and first.config.server.dev_token_endpoint


def test_env_overrides_the_secret_in_every_mode(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(API_SECRET_ENV, "e" * 40)
    assert load_config(None, data_dir=str(tmp_path)).api_secret == "e" * 40
    path = write(tmp_path, "auth: {api_secret: " + "c" * 40 + "}")
    assert load_config(path).api_secret == "e" * 40


def test_production_config_requires_a_strong_secret(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(API_SECRET_ENV, raising=False)
    with pytest.raises(ConfigError, match="no API secret configured"):
        load_config(write(tmp_path, "server: {port: 9000}"))
    with pytest.raises(ConfigError, match="at least 32"):
        load_config(write(tmp_path, "auth: {api_secret: short}"))
    secret = tmp_path / "secret"
    secret.write_text("f" * 40 + "\n")
    loaded = load_config(write(tmp_path, f"auth: {{api_secret_file: {secret}}}"))
    assert loaded.api_secret == "f" * 40
    assert not loaded.dev_mode


def test_cli_overrides(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(API_SECRET_ENV, "e" * 40)
    loaded = load_config(None, data_dir=str(tmp_path), host="::1", port=9999)
    assert loaded.base_url == "http://[::1]:9999"


def test_secret_references_from_env_and_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(API_SECRET_ENV, "e" * 40)
    monkeypatch.setenv("TURN_PASSWORD", "turn-pass")
    (tmp_path / "key.txt").write_text("k" * 40 + "\n")
    path = write(
        tmp_path,
        "media: {ice_servers: [{urls: ['turn:turn.example:3478'], username: u, "
        "credential: '${env:TURN_PASSWORD}'}]}\nauth: {api_keys: {backend: '${file:key.txt}'}}\n"
        "server: {public_url: '$${literal}'}\n",
    )
    loaded = load_config(path)
    assert loaded.config.media.ice_servers[0].credential == "turn-pass"
    assert loaded.config.auth.api_keys["backend"] == "k" * 40
    assert loaded.config.server.public_url == "${literal}"
    monkeypatch.delenv("TURN_PASSWORD")
    with pytest.raises(ConfigError, match=r"media.ice_servers\[0\].credential: the environment variable"):
        load_config(path)


def test_api_key_secrets_must_be_strong() -> None:
    with pytest.raises(ConfigError, match=r"auth\.api_keys: Value error, the secret of API key 'backend'"):
        parse_config({"auth": {"api_keys": {"backend": "hunter2"}}})
