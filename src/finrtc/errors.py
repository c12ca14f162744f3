"""Typed errors. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class FinrtcError(Exception):
    """Base of every error finrtc raises on purpose."""


class ConfigError(FinrtcError):
    """The YAML configuration (or a script / hook option) is invalid."""


class AuthError(FinrtcError):
    """A request carries no valid credentials (HTTP 401)."""


class ForbiddenError(FinrtcError):
    """Valid credentials that do not allow the action (HTTP 403)."""


class NotFoundError(FinrtcError):
    """A room, session or resource does not exist (HTTP 404)."""


class GoneError(NotFoundError):
    """A room that existed has been closed (HTTP 410); creating it again reuses the name."""


class ConflictError(FinrtcError):
    """The request conflicts with the current state (HTTP 409)."""


class BadRequestError(FinrtcError):
    """The request is malformed: bad SDP, bad JSON, unsupported media (HTTP 400)."""


class CapacityError(FinrtcError):
    """A limit is reached: room full, server draining (HTTP 503 / 429)."""


class HookError(FinrtcError):
    """A hook could not be loaded or violated its contract."""


class ArchiveError(FinrtcError):
    """The archive could not be written or read."""


class KeyFileError(FinrtcError):
    """A key file is missing, unreadable, malformed or has unsafe permissions."""


class DirectoryUnavailableError(CapacityError):
    """The cluster's room directory (Redis) cannot be reached: new rooms cannot be placed (503)."""
