"""REST errors: JSON ``{"code", "message", "more_info", "status"}`` for every failure,
including unknown routes and our own bugs (which never show a traceback)."""

from __future__ import annotations

import json
from typing import Awaitable, Callable

import structlog
from aiohttp import web

from protocol.errors import ErrorCode, RemoteProtocolError

from ..engines.ports import EngineUnavailable
from ..signaling.capacity import CallLimitReached, Draining

log = structlog.get_logger(__name__)

# Where the error table lives; relative to the project, as this server has no docs site of its own.
MORE_INFO = "docs/protocol.md#errors ({code})"


class ApiError(Exception):
    def __init__(self, error: ErrorCode, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.error = error
        self.message = message or error.message
        self.headers = headers or {}
        super().__init__(self.message)


def error_response(error: ErrorCode, message: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    status = error.http_status
    body = {"code": error.code, "message": message or error.message, "more_info": MORE_INFO.format(code=error.code), "status": status}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.error, exc.message, exc.headers)
    except RemoteProtocolError as exc:
        return error_response(exc.error, exc.message)
    except EngineUnavailable:
        return error_response(ErrorCode.ENGINE_UNAVAILABLE, headers={"Retry-After": "1"})
    except CallLimitReached:
        return error_response(ErrorCode.CALL_LIMIT, headers={"Retry-After": "1"})
    except Draining:
        # A signaling node stopping gracefully: a load balancer or carrier that
        # retries a 503 reaches another (this one's /readyz is 503 already).
        return error_response(
            ErrorCode.SERVER_SHUTTING_DOWN, "this signaling node is shutting down; send the call to another", headers={"Retry-After": "1"}
        )
    except web.HTTPNotFound:
        return error_response(ErrorCode.NOT_FOUND)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(ErrorCode.REQUEST_TOO_LARGE, f"{ErrorCode.REQUEST_TOO_LARGE.message} ({exc.text})")
    except web.HTTPMethodNotAllowed as exc:
        return error_response(ErrorCode.METHOD_NOT_ALLOWED, headers={"Allow": ",".join(sorted(exc.allowed_methods))})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(ErrorCode.PARAMETER_INVALID if exc.status < 500 else ErrorCode.INTERNAL, exc.reason)
    except Exception:
        log.exception("request failed", path=request.path, method=request.method)
        return error_response(ErrorCode.INTERNAL)
