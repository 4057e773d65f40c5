"""Seed 003 §5.1 for the API: bearer tokens with two roles, a request size limit and a
per-client rate limit. Paths given by clients are confined to the data root (`confine`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_response, invalid, request_id
from api.settings import ADMIN, ApiSettings

bearer = HTTPBearer(auto_error=False, description="a read-only or an admin token")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _settings(request: Request) -> ApiSettings:
    s: ApiSettings = request.app.state.settings
    return s


def role(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The caller's role; 401 without a valid token (unless the API runs open)."""
    s = _settings(request)
    if not s.auth_enabled:
        return ADMIN
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(401, "a bearer token is required", headers=_CHALLENGE)
    got = s.role_of(creds.credentials)
    if got is None:
        raise ApiError(401, "the bearer token is not valid", headers=_CHALLENGE)
    return got


def reader(r: Annotated[str, Depends(role)]) -> str:
    return r


def admin(r: Annotated[str, Depends(role)]) -> str:
    if r != ADMIN:
        raise ApiError(403, "this operation needs an admin token")
    return r


def confine(root: Path | None, relative: str, field: str = "body.path") -> Path:
    """A client path inside the data root, or a 422 naming the field: absolute paths, `..`
    and symlinks leading out of the root are refused."""
    if root is None:
        raise ApiError(409, "directory jobs need CLUSTERER_API_DATA_ROOT to be configured")
    p = PurePosixPath(relative)
    if not relative or "\x00" in relative or p.is_absolute() or ".." in p.parts:
        raise invalid(field, "must be a relative path inside the data root, without `..`")
    base = root.resolve()
    target = (base / p).resolve()
    if target != base and base not in target.parents:
        raise invalid(field, "resolves outside the data root")
    return target


class BodyLimitMiddleware:
    """413 for a body over the limit, whether it announces its length or streams it. Batch
    uploads (POST .../cluster/batch) have their own, larger limit."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int, upload_path: str) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit
        self.upload_path = upload_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] == self.upload_path else self.limit
        length = None
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
        if length is not None and length > limit:
            await self._reject(scope, receive, send, limit)
            return
        # read the body up front (bounded) so an over-long stream is refused before any
        # handler sees part of it
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > limit:
                await self._reject(scope, receive, send, limit)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        data = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        resp = error_response(
            request_id(scope), 413, f"request body larger than the limit of {limit} bytes"
        )
        await resp(scope, receive, send)


_EXEMPT = frozenset({"/health", "/api/v1/health", "/"})


class RateLimitMiddleware:
    """A token bucket per client (a configured bearer token's hash, else the peer address):
    `rate_per_minute` sustained, `burst` at once; 429 with Retry-After beyond.
    Per API process; /health (probes) and the web page's static files are exempt."""

    def __init__(
        self,
        app: ASGIApp,
        rate_per_minute: int,
        burst: int,
        known: Callable[[str], bool] = lambda token: True,
    ) -> None:
        self.app = app
        self.known = known
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.buckets: dict[str, tuple[float, float]] = {}

    def _client(self, scope: Scope) -> str:
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                token = v.decode("latin-1").partition(" ")[2].strip()
                # a made-up token gets no bucket of its own: it shares the address's
                if token and self.known(token):
                    return "t:" + hashlib.sha256(v).hexdigest()[:24]
        client = scope.get("client")
        return "a:" + (client[0] if client else "unknown")

    def take(self, key: str, now: float) -> float:
        """0 when the request may go, else the seconds until it could."""
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        if len(self.buckets) > 100_000:  # bound memory: forget the full buckets
            self.buckets = {k: b for k, b in self.buckets.items() if b[0] < self.burst}
        return (1.0 - tokens) / self.rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in _EXEMPT
            or scope["path"].startswith("/static/")
        ):
            await self.app(scope, receive, send)
            return
        wait = self.take(self._client(scope), time.monotonic())
        if wait > 0:
            retry = str(max(1, int(wait + 0.999)))
            resp = error_response(
                request_id(scope),
                429,
                "too many requests; slow down",
                headers={"Retry-After": retry},
            )
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)
