"""Which session services (archive, compliance) a server runs, and the data folder they need."""

from __future__ import annotations

from finrtc.config import LoadedConfig
from finrtc.session import ExtensionFactory


def prepare_data_dir(loaded: LoadedConfig) -> None:
    loaded.data_dir.mkdir(parents=True, exist_ok=True)


def extension_factories(loaded: LoadedConfig) -> list[ExtensionFactory]:
    return []
