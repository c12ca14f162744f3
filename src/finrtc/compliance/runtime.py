"""The server-wide compliance runtime: validated scripts, the model and the worker pool."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from finrtc.compliance.monitor import ComplianceMonitor, Publish
from finrtc.compliance.recognizer import ModelSpec, builtin_model, load_model_dir
from finrtc.compliance.script import Script, load_scripts
from finrtc.compliance.settings import ComplianceConfig
from finrtc.compliance.workers import RecognizerPool
from finrtc.errors import ConfigError

if TYPE_CHECKING:
    from finrtc.config import LoadedConfig, RoomPolicy


def load_model(config: ComplianceConfig, base_dir: Path | None) -> ModelSpec:
    recognizer = config.recognizer
    if recognizer.backend == "pocketsphinx":
        return builtin_model()
    if recognizer.model_dir is None:
        raise ConfigError(
            "compliance.recognizer.model_dir is required with backend model_dir "
            "(a folder holding finrtc-model.yaml)"
        )
    path = Path(recognizer.model_dir).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    model = load_model_dir(path, recognizer.model_sha256)
    if model.engine == "vosk" and recognizer.transcribe == "off":
        raise ConfigError(
            "compliance.recognizer.transcribe: off needs keyphrase spotting, which the vosk "
            f"engine of {model.source} does not have; use on_demand or always"
        )
    return model


class ComplianceRuntime:
    """Create once at server start (validates everything), `start()`, `await close()`."""

    def __init__(
        self, config: ComplianceConfig, scripts: dict[str, Script], model: ModelSpec
    ) -> None:
        self.config = config
        self.scripts = scripts
        self.model = model
        for name, script in scripts.items():
            if script.language != model.language:
                raise ConfigError(
                    f"compliance.scripts.{name}: the script is in {script.language!r} but the "
                    f"recognizer model ({model.source}) recognizes {model.language!r}; configure "
                    "compliance.recognizer.backend: model_dir with a model of that language"
                )
        self.pool = RecognizerPool(
            model,
            workers=config.recognizer.workers,
            queue_seconds=config.recognizer.queue_seconds,
            transcribe=config.recognizer.transcribe,
            max_utterance_s=config.recognizer.max_utterance_s,
            nice=config.recognizer.nice,
        )
        self._started = False

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> ComplianceRuntime | None:
        """None when compliance is disabled. Raises ConfigError naming the key path."""
        config = loaded.config.compliance
        if not config.enabled:
            return None
        base_dir = loaded.source.parent if loaded.source is not None else None
        scripts = load_scripts(config.scripts, base_dir)
        policy_script = loaded.config.rooms.default_policy.script
        if policy_script is not None and policy_script not in scripts:
            known = ", ".join(sorted(scripts)) or "none configured"
            raise ConfigError(
                f"rooms.default_policy.script: unknown script {policy_script!r} "
                f"(compliance.scripts has: {known})"
            )
        return cls(config, scripts, load_model(config, base_dir))

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.pool.start()

    async def close(self) -> None:
        if self._started:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.close)

    def script(self, name: str) -> Script:
        try:
            return self.scripts[name]
        except KeyError:
            known = ", ".join(sorted(self.scripts)) or "none configured"
            raise ConfigError(
                f"unknown script {name!r} (compliance.scripts has: {known})"
            ) from None

    def create_session(
        self, room: str, policy: RoomPolicy, publish: Publish
    ) -> ComplianceMonitor | None:
        """A session for a room whose policy names a script (else None). Call `start()` on it
        when the call begins (deadlines count from there) and `await close()` when it ends."""
        if policy.script is None:
            return None
        return ComplianceMonitor(
            room, self.script(policy.script), self.pool, publish,
            require_consent=policy.require_consent,
            tick_interval=self.config.tick_interval_s,
        )
