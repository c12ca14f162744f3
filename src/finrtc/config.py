"""The operator's YAML configuration: one file, validated strictly, errors that name the key path.

Without a file finrtc runs in dev mode: everything on 127.0.0.1, secrets and keys generated into
the data folder, the demo page and the dev token endpoint on.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from finrtc.archive.settings import ArchiveConfig
from finrtc.cluster.settings import ClusterConfig
from finrtc.compliance.settings import ComplianceConfig
from finrtc.config_base import StrictModel, format_validation_error
from finrtc.errors import ConfigError
from finrtc.identity.settings import IdentityConfig, IdentityPolicy
from finrtc.webhooks.settings import WebhooksConfig

API_SECRET_ENV = "FINRTC_API_SECRET"
MIN_SECRET_BYTES = 32


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The URL clients use to reach this server (for printed links); derived from host/port if empty.
    public_url: str | None = None
    max_body_bytes: int = Field(default=128 * 1024, ge=1024)
    cors_allow_origins: list[str] = Field(default_factory=list)
    drain_timeout_s: float = Field(default=10.0, ge=0)
    # A connection that has not completed a request (slow headers, slowloris) or sits idle
    # between requests this long is closed; WebSockets and running requests are not affected.
    idle_connection_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    demo_page: bool = False
    dev_token_endpoint: bool = False
    # Media worker processes, each with its own event loop and aiortc stack (one GIL each); a
    # room lives on one of them. None: one per core, or 1 in dev mode. `--workers` overrides.
    workers: int | None = Field(default=None, ge=1, le=256)


class AuthConfig(StrictModel):
    api_secret: str | None = None
    api_secret_file: str | None = None
    # Room API credentials: key id -> secret (HTTP Basic or signed admin JWT).
    api_keys: dict[str, str] = Field(default_factory=dict)
    token_leeway_s: float = Field(default=5.0, ge=0, le=300)

    @field_validator("api_keys")
    @classmethod
    def _strong_api_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        # These secrets sign admin tokens (HS256) and guard the room API: no guessable ones.
        for key_id, secret in keys.items():
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"the secret of API key {key_id!r} must be at least {MIN_SECRET_BYTES} bytes of random "
                    "data (python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
        return keys


class IceServerConfig(StrictModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None

    @field_validator("urls")
    @classmethod
    def _check_schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"ICE server URL {url!r} must start with stun:, turn: or turns:")
        return urls


ViewerCodec = Literal["vp8", "h264"]


def _default_viewer_codecs() -> list[ViewerCodec]:
    return ["vp8", "h264"]


class VideoEncodingConfig(StrictModel):
    bitrate_bps: int = Field(default=800_000, ge=50_000, le=20_000_000)
    # Extra keyframes (subscriber PLI, joins) are rate-limited to this interval.
    keyframe_min_interval_s: float = Field(default=0.5, ge=0)
    # Longest spacing between keyframes of the shared encoder, so a viewer that lost packets
    # without asking (no PLI) recovers within it. Segment boundaries ask for their own keyframe.
    keyframe_interval_s: float = Field(default=4.0, gt=0, le=60)
    # libvpx speed, larger magnitude = faster and coarser. Negative is a fixed speed; positive
    # lets libvpx adapt, and it then spends the whole frame budget: at 640x480 -8 encoded in
    # 2.1 ms what 8 took 3.7 ms for, at the same PSNR and bitrate.
    cpu_used: int = Field(default=-8, ge=-16, le=16)
    # Codecs a viewer may receive, most preferred first, for a viewer that offers several. Each
    # published track has at most one shared encoder per codec here, created when its first
    # viewer of that codec subscribes. Publishers may send VP8 or H.264 whatever this says.
    viewer_codecs: list[ViewerCodec] = Field(default_factory=_default_viewer_codecs, min_length=1)

    @field_validator("viewer_codecs")
    @classmethod
    def _unique_codecs(cls, codecs: list[ViewerCodec]) -> list[ViewerCodec]:
        if len(set(codecs)) != len(codecs):
            raise ValueError(f"viewer_codecs lists a codec twice: {codecs}")
        return codecs


class AudioEncodingConfig(StrictModel):
    # Used when audio is re-encoded (passthrough off, or a hook changes audio).
    bitrate_bps: int = Field(default=32_000, ge=6_000, le=510_000)
    # Forward the publisher's Opus packets unchanged when no hook changes audio: the archive and
    # viewers get the bytes the customer's device produced (no second lossy generation), and
    # the server spends no encode CPU. Audio is still decoded once for the hooks.
    passthrough: bool = True


class MediaConfig(StrictModel):
    # Addresses the media (ICE) sockets bind to and offer as host candidates.
    bind_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    # Public address(es) announced instead of the bound ones (1:1 NAT); same order.
    announced_addresses: list[str] = Field(default_factory=list)
    ice_servers: list[IceServerConfig] = Field(default_factory=list)
    video: VideoEncodingConfig = Field(default_factory=VideoEncodingConfig)
    audio: AudioEncodingConfig = Field(default_factory=AudioEncodingConfig)
    # Encoded packets waiting for one subscriber before it skips to the next keyframe.
    subscriber_queue_packets: int = Field(default=120, ge=4)
    # Decoded frames waiting for the hook chain; older video frames are dropped past this.
    pipeline_queue_frames: int = Field(default=4, ge=1)
    worker_threads: int = Field(default=4, ge=1, le=64)
    connect_timeout_s: float = Field(default=20.0, gt=0)
    # A publisher whose tracks carry no media this long has vanished (no BYE): its session ends
    # as interrupted. Muted browsers still send packets, so this only catches dead clients.
    publisher_timeout_s: float = Field(default=15.0, gt=2.0)


class RoomPolicy(StrictModel):
    script: str | None = None
    recording: bool = True
    retention_class: str = "default"
    residency: str | None = None
    max_participants: int = Field(default=16, ge=1, le=1000)
    require_consent: bool = False
    identity: IdentityPolicy = Field(default_factory=IdentityPolicy)


class RoomsConfig(StrictModel):
    require_explicit_creation: bool = False
    default_policy: RoomPolicy = Field(default_factory=RoomPolicy)


class HookSpec(StrictModel):
    # A built-in hook name (e.g. "visible_watermark") or an import path "package.module:Class".
    use: str
    options: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


def _default_hooks() -> list[HookSpec]:
    return [HookSpec(use="visible_watermark")]


class FinrtcConfig(StrictModel):
    data_dir: str = "./finrtc-data"
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    rooms: RoomsConfig = Field(default_factory=RoomsConfig)
    hooks: list[HookSpec] = Field(default_factory=_default_hooks)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _default_residency_has_a_target(self) -> FinrtcConfig:
        policy = self.rooms.default_policy
        residency = policy.residency
        if (
            self.archive.enabled and policy.recording and residency is not None
            and residency not in self.archive.residencies()
        ):
            known = ", ".join(self.archive.residencies()) or "none"
            raise ValueError(
                f"rooms.default_policy.residency {residency!r} has no archive target "
                f"(archive.region / archive.targets name: {known}); add one or change the tag"
            )
        return self


class LoadedConfig:
    """A validated config plus what was derived from its surroundings (paths, secrets, mode)."""

    def __init__(
        self,
        config: FinrtcConfig,
        *,
        dev_mode: bool,
        source: Path | None,
        api_secret: str,
    ) -> None:
        self.config = config
        self.dev_mode = dev_mode
        self.source = source
        self.api_secret = api_secret

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir).expanduser().resolve()

    def resolve(self, path: str) -> Path:
        """Resolve a path from the config against the data folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.data_dir / candidate

    def resolve_beside_config(self, path: str) -> Path:
        """Resolve a path relative to the config file's folder (scripts, hook assets)."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or self.source is None:
            return candidate.resolve()
        return (self.source.parent / candidate).resolve()

    @property
    def base_url(self) -> str:
        server = self.config.server
        if server.public_url:
            return server.public_url.rstrip("/")
        host = server.host if ":" not in server.host else f"[{server.host}]"
        return f"http://{host}:{server.port}"


def parse_config(data: Any, source: str = "<config>") -> FinrtcConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return FinrtcConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{format_validation_error(error)}") from None


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None


_SECRET_REFERENCE = re.compile(r"^\$\{(env|file):([^}]+)\}$")


def expand_references(data: Any, base_dir: Path | None, path: str = "") -> Any:
    """Replace whole-string values `${env:NAME}` / `${file:PATH}` so secrets stay out of the YAML.

    Only a value that is exactly one reference is replaced; `$${...}` is a literal `${...}`.
    Relative files resolve against the config file's folder; trailing newlines are stripped.
    """
    if isinstance(data, dict):
        return {
            key: expand_references(value, base_dir, f"{path}.{key}" if path else str(key))
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [expand_references(item, base_dir, f"{path}[{i}]") for i, item in enumerate(data)]
    if not isinstance(data, str):
        return data
    if data.startswith("$${"):
        return data[1:]
    match = _SECRET_REFERENCE.match(data)
    if match is None:
        return data
    kind, target = match.group(1), match.group(2).strip()
    where = path or "<root>"
    if kind == "env":
        value = os.environ.get(target)
        if not value:
            raise ConfigError(f"{where}: the environment variable {target} is not set or empty")
        return value
    file_path = Path(target).expanduser()
    if not file_path.is_absolute() and base_dir is not None:
        file_path = base_dir / file_path
    try:
        value = file_path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as error:
        raise ConfigError(f"{where}: cannot read {file_path}: {error.strerror}") from None
    if not value:
        raise ConfigError(f"{where}: {file_path} is empty")
    return value


def dev_config(data_dir: str | None = None) -> FinrtcConfig:
    """The embedded dev-mode config: loopback only, demo page and dev tokens on."""
    base = FinrtcConfig()
    server = base.server.model_copy(update={"demo_page": True, "dev_token_endpoint": True})
    compliance = base.compliance.model_copy(update={"scripts": {"demo": "builtin:demo_insurance_en"}})
    rooms = base.rooms.model_copy(
        update={"default_policy": base.rooms.default_policy.model_copy(update={"script": "demo"})}
    )
    updates: dict[str, Any] = {"server": server, "compliance": compliance, "rooms": rooms}
    if data_dir is not None:
        updates["data_dir"] = data_dir
    return base.model_copy(update=updates)


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(content)


def _read_secret_file(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"cannot read secret file {path}: {error.strerror}") from None
    if not value:
        raise ConfigError(f"secret file {path} is empty")
    return value


def resolve_api_secret(config: FinrtcConfig, data_dir: Path, dev_mode: bool, source: Path | None) -> str:
    env_value = os.environ.get(API_SECRET_ENV)
    if env_value:
        secret = env_value
    elif config.auth.api_secret:
        secret = config.auth.api_secret
    elif config.auth.api_secret_file:
        secret_path = Path(config.auth.api_secret_file).expanduser()
        if not secret_path.is_absolute():
            secret_path = (source.parent if source else data_dir) / secret_path
        secret = _read_secret_file(secret_path)
    elif dev_mode:
        secret_path = data_dir / "keys" / "api_secret"
        if not secret_path.exists():
            _write_private(secret_path, secrets.token_urlsafe(48) + "\n")
        secret = _read_secret_file(secret_path)
    else:
        raise ConfigError(
            "auth: no API secret configured; set auth.api_secret_file (preferred), auth.api_secret "
            f"or the {API_SECRET_ENV} environment variable"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the API secret is {len(secret.encode())} bytes long; HS256 tokens need at least "
            f"{MIN_SECRET_BYTES} random bytes (generate one with: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return secret


def load_config(
    path: Path | None,
    *,
    data_dir: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> LoadedConfig:
    """Load the YAML file (or the dev defaults when `path` is None) and apply CLI overrides."""
    if path is None:
        config = dev_config(data_dir)
        dev_mode = True
    else:
        config = parse_config(expand_references(read_yaml(path), path.resolve().parent), str(path))
        if data_dir is not None:
            config = config.model_copy(update={"data_dir": data_dir})
        dev_mode = False
    server_updates: dict[str, Any] = {}
    if host is not None:
        server_updates["host"] = host
    if port is not None:
        server_updates["port"] = port
    if server_updates:
        config = config.model_copy(update={"server": config.server.model_copy(update=server_updates)})
    resolved_dir = Path(config.data_dir).expanduser().resolve()
    secret = resolve_api_secret(config, resolved_dir, dev_mode, path.resolve() if path else None)
    return LoadedConfig(config, dev_mode=dev_mode, source=path.resolve() if path else None, api_secret=secret)
