"""Every error leaves the gateway as `{"error": {"code", "message"}}` with a fitting status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.exceptions import RedisError

from vidstream.compose.rules import InvalidTimeline
from vidstream.core import logs
from vidstream.core.errors import (
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    PermanentError,
    StorageError,
)
from vidstream.feed.base import FeedUnavailable
from vidstream.state.replication import NotReplicated

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logs.get(role="gateway")

# Permanent job errors raised while validating a request, by the status they deserve.
_STATUS_FOR_CODE = {"too_large": 413, "source_not_found": 400, "not_found": 404, "conflict": 409}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.details = details  # where and why, one entry per problem


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None,
    details: list[dict[str, str]] | None = None,
) -> web.Response:  # fmt: skip
    error: dict[str, Any] = {"code": code, "message": message}
    if details:  # where and why, one entry per problem (a timeline's fields)
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)


def _code_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)
    except InvalidTimeline as exc:
        details = [problem.to_dict() for problem in exc.problems]
        response = error_response(422, exc.code, exc.message, details=details)
    except PermanentError as exc:
        response = error_response(_STATUS_FOR_CODE.get(exc.code, 400), exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        code = "too_large" if exc.status == 413 else _code_for(exc.status)
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        response = error_response(exc.status, code, message, kept)
    except (InvalidKey, ObjectTooLarge) as exc:  # the client's key or bytes are at fault
        response = error_response(
            400 if isinstance(exc, InvalidKey) else 413, exc.code, exc.message
        )
    except ObjectNotFound as exc:
        response = error_response(404, exc.code, exc.message)
    except NotReplicated as exc:  # made on the primary, which may yet lose it (docs/redis.md)
        log.warning("not_replicated", error=str(exc))
        response = error_response(
            503, "unavailable", "The job store could not confirm the change on a replica in "
            "time; try again shortly (a new job with the same Idempotency-Key, so it is made "
            "once).",
        )  # fmt: skip
    except (RedisError, FeedUnavailable) as exc:
        log.warning("redis_unavailable", error=str(exc))
        response = error_response(
            503, "unavailable", "The job store is unavailable; try again shortly."
        )
    except StorageError as exc:
        log.warning("storage_unavailable", error=str(exc))
        response = error_response(
            503, "storage_unavailable", "Object storage is unavailable; try again shortly."
        )
    except Exception:
        log.exception("request_crashed", method=request.method, path=request.path)
        response = error_response(500, "internal_error", "An internal error occurred.")
    return response


# The only request headers the API reads, and the response headers a browser script may see.
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
CORS_EXPOSE_HEADERS = "Location, Retry-After, X-Request-Id"


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """Let browsers on exactly `origins` call the API, preflight included; no one else."""
    allowed_origins = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and origin in allowed_origins
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                return error_response(403, "forbidden_origin", "This origin may not call the API.")
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            response.headers["Vary"] = "Origin"
        return response

    return cors
