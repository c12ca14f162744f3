"""Background tasks that must not be garbage-collected mid-flight or fail silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

_running: set[asyncio.Task[Any]] = set()


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def spawn(coroutine: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
    """Run `coroutine` in the background, keeping a reference until it ends and logging failures."""
    task = asyncio.ensure_future(coroutine)
    if name:
        task.set_name(name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task
