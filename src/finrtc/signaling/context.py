"""Typed keys for what the aiohttp application carries."""

from __future__ import annotations

from aiohttp import web

from finrtc.config import LoadedConfig
from finrtc.room import RoomManager

CONFIG: web.AppKey[LoadedConfig] = web.AppKey("config", LoadedConfig)
ROOMS: web.AppKey[RoomManager] = web.AppKey("rooms", RoomManager)


class Readiness:
    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"


READINESS: web.AppKey[Readiness] = web.AppKey("readiness", Readiness)
