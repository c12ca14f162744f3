"""Every error leaves the server as JSON with an actionable message; never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from finrtc import metrics
from finrtc.errors import (
    AuthError,
    BadRequestError,
    CapacityError,
    ConfigError,
    ConflictError,
    FinrtcError,
    ForbiddenError,
    NotFoundError,
)
from finrtc.signaling.context import CONFIG

log = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[FinrtcError], int, str], ...] = (
    (AuthError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (BadRequestError, 400, "bad_request"),
    (ConfigError, 400, "bad_request"),
    (CapacityError, 503, "unavailable"),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers=headers,
    )


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except FinrtcError as error:
        for error_type, status, code in STATUS_BY_ERROR:
            if isinstance(error, error_type):
                headers = {"WWW-Authenticate": 'Bearer realm="finrtc"'} if status == 401 else None
                if status == 503:
                    headers = {"Retry-After": "5"}
                response = json_error(status, code, str(error), headers)
                break
        else:
            log.error("unhandled finrtc error on %s %s: %s", request.method, request.path, error)
            response = json_error(500, "internal", "internal error; the server log has details")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = error.text or error.reason
        if error.status == 413:
            limit = request.app[CONFIG].config.server.max_body_bytes
            message = f"the request body is larger than the server accepts ({limit} bytes)"
        allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        response = json_error(error.status, error.reason.lower().replace(" ", "_"), str(message), allow)
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        response = json_error(500, "internal", "internal error; the server log has details")
    metrics.HTTP_REQUESTS.labels(route=_route_label(request), status=f"{response.status // 100}xx").inc()
    return response
