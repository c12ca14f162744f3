"""Every error leaves the server as JSON with an actionable message; never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from finrtc import metrics
from finrtc.errors import (
    AuthError,
    BadRequestError,
    CapacityError,
    ConfigError,
    ConflictError,
    FinrtcError,
    ForbiddenError,
    GoneError,
    NotFoundError,
)
from finrtc.signaling.context import CONFIG
from finrtc.signaling.parsing import check_path_names

log = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[FinrtcError], int, str], ...] = (
    (AuthError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (GoneError, 410, "gone"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (BadRequestError, 400, "bad_request"),
    (ConfigError, 400, "bad_request"),
    (CapacityError, 503, "unavailable"),
)

KEPT_ERROR_HEADERS = ("Allow", "Upgrade")

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
        check_path_names(request)
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
        # Headers the status code itself calls for (405 Allow, 426 Upgrade) survive the rewrite.
        kept = {name: error.headers[name] for name in KEPT_ERROR_HEADERS if name in error.headers}
        code = error.reason.lower().replace(" ", "_")
        response = json_error(error.status, code, str(message), kept or None)
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        response = json_error(500, "internal", "internal error; the server log has details")
    metrics.HTTP_REQUESTS.labels(route=_route_label(request), status=f"{response.status // 100}xx").inc()
    return response


class MalformedRequestLogFilter(logging.Filter):
    """aiohttp answers a malformed HTTP message (bad header bytes, bad request line) with 400 and
    logs it with a traceback at ERROR: any client could fill the operator's log with those. Keep
    one warning line without the traceback; real server errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and error.code < 500:
            record.msg = f"{record.getMessage()}: malformed HTTP request answered {error.code}: " + " ".join(
                str(error.message).split()
            )[:200]
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_malformed_request_logs() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, MalformedRequestLogFilter) for existing in server_log.filters):
        server_log.addFilter(MalformedRequestLogFilter())
