"""Errors as JSON a person can act on, and the request size limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import (
    AuthError,
    BadRecord,
    ConfigError,
    DuplicateJob,
    GristmillError,
    JobTimeout,
    NotFound,
    PermissionDenied,
    RedisUnavailable,
    SpecError,
)

MAX_BODY_BYTES = 16 * 1024 * 1024

STATUS = (
    (AuthError, 401), (PermissionDenied, 403), (NotFound, 404), (DuplicateJob, 409),
    (JobTimeout, 408), (SpecError, 400), (RedisUnavailable, 503), (ConfigError, 500),
    # Stored data this version cannot read: the server's fault, and asking again will not help.
    (BadRecord, 500),
)


def status_of(exc: GristmillError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, **extra}


ErrorPage = Callable[[Request, GristmillError, int], Response | None]


def install(app: FastAPI, page: ErrorPage | None = None) -> None:
    """Register the handlers that turn our errors into JSON responses.

    ``page`` may answer instead (the web UI's HTML error pages); it returns
    None for requests that are not its own."""

    @app.exception_handler(GristmillError)
    async def gristmill_error(request: Request, exc: GristmillError) -> Response:
        if page is not None:
            answer = page(request, exc, status_of(exc))
            if answer is not None:
                return answer
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
        extra = {"damaged_job": exc.job_id} if isinstance(exc, BadRecord) else {}
        return JSONResponse(error_body(str(exc), **extra), status_code=status_of(exc),
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        return JSONResponse(error_body("; ".join(problems)), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Unknown routes (404), wrong methods (405), oversized bodies (413): the same shape.
        if page is not None and exc.status_code == 404:
            answer = page(request, NotFound(f"nothing at {request.url.path}"), 404)
            if answer is not None:
                return answer
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code,
                            headers=exc.headers)

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)


class TooLarge(HTTPException):
    """Raised while reading a body past the limit.

    An HTTPException, because FastAPI turns any other error raised while it
    reads the body into "400 There was an error parsing the body".
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit // (1024 * 1024)} MiB"


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge(self.limit)
            return message

        try:
            await self.app(scope, counted, send)
        except TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(error_body(_too_large(self.limit)), status_code=413)
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
