"""The one error shape of the API: every error, whatever raised it, answers
`{"error": {"status", "code", "message", "request_id", "fields"}}` with the request id also in
the `X-Request-ID` header. Internal errors are logged with their traceback under the request
id and answered with a generic message: a stack trace never leaves the process."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class FieldError(BaseModel):
    field: str = Field(description="where the bad value is, e.g. `query.limit`, `body.vector`")
    message: str


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str
    request_id: str
    fields: list[FieldError] = Field(default_factory=list)


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised by handlers for an answer other than 200; rendered in the one error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        fields: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}
        self.code = code or _CODES.get(status, "error")


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming the field, for checks pydantic cannot express (cursor, vector size...)."""
    return ApiError(422, f"{field}: {message}", [FieldError(field=field, message=message)])


def request_id(scope_or_request: Scope | Request) -> str:
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    rid = scope.get("state", {}).get("request_id")
    return str(rid) if rid else "-"


def error_response(
    rid: str,
    status: int,
    message: str,
    fields: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorDetail(
            status=status,
            code=code or _CODES.get(status, "error"),
            message=message,
            request_id=rid,
            fields=fields or [],
        )
    )
    return JSONResponse(
        body.model_dump(), status_code=status, headers={**(headers or {}), REQUEST_ID_HEADER: rid}
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": _CODES[code].replace("_", " ")}
    for code in (401, 403, 404, 413, 422, 429, 500)
}
"""Documented on every route, so the OpenAPI spec tells clients (and schemathesis) the shape."""


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            request_id(request), exc.status, exc.message, exc.fields, exc.headers, exc.code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            FieldError(field=_loc(e.get("loc", ())), message=str(e.get("msg", "invalid")))
            for e in exc.errors()
        ]
        names = ", ".join(f.field for f in fields[:5]) or "request"
        return error_response(request_id(request), 422, f"invalid input: {names}", fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "")
        return error_response(
            request_id(request), exc.status_code, message, headers=dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("request %s failed", rid, exc_info=exc)
        return error_response(rid, 500, "internal error; quote the request id to the operator")


class RequestIdMiddleware:
    """Outermost layer: gives each request an id (the client's X-Request-ID when it is a
    short safe token, else a new UUID), and turns anything that escapes the app into the one
    error shape, so even a failure in another middleware never shows a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for k, v in scope.get("headers", []):
            if k == b"x-request-id":
                given = v.decode("latin-1")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("request %s failed", rid, exc_info=exc)
            if started:
                raise
            resp = error_response(rid, 500, "internal error; quote the request id to the operator")
            await resp(scope, receive, send)
