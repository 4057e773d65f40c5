"""The FastAPI application of `clusterer api` and its process entry point."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import Depends, FastAPI, Request

from api import batch, errors, read, web
from api.cache import ReadCache
from api.errors import ApiError, ErrorBody
from api.jobs import JobRunner
from api.models import Health, Statistics
from api.read import LagProbe
from api.security import BodyLimitMiddleware, RateLimitMiddleware, reader
from api.settings import ApiSettings
from processors import EngineConfig

log = logging.getLogger(__name__)
VERSION = "1"


def create_app(settings: ApiSettings, engine_config: EngineConfig | None = None) -> FastAPI:
    s = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if s.service.migrate_on_start:
            from state.db import migrate

            await migrate(s.service.postgres_dsn)
        pool = await asyncpg.create_pool(
            s.service.postgres_dsn, min_size=1, max_size=s.pg_pool_max, command_timeout=30
        )
        assert pool is not None
        app.state.pool = pool
        app.state.cache = ReadCache(s.service.redis_url, s.service.prefix, s.cache_seconds)
        app.state.lag = LagProbe(s.service, s.kafka_timeout_seconds)
        app.state.centroid_cache = {}
        runner = None
        if s.job_runners:
            runner = JobRunner(
                s.service.postgres_dsn,
                engine_config or EngineConfig(),
                s.data_root,
                s.job_lease_seconds,
                s.job_checkpoint_items,
            )
            runner.start()
        app.state.runner = runner
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            await app.state.cache.close()
            await pool.close()

    app = FastAPI(
        title="Stage 4 clusterer API",
        version=VERSION,
        description="Read side of the streaming clusterer (clusters, items, search, statistics)"
        " and batch clustering jobs. Bearer tokens: read-only or admin.",
        lifespan=lifespan,
    )
    app.state.settings = s
    errors.install(app)
    app.include_router(read.router, dependencies=[Depends(reader)])
    app.include_router(batch.router, dependencies=[Depends(reader)])
    app.include_router(web.router)

    async def health(request: Request) -> Health:
        """Liveness and readiness: 200 while PostgreSQL answers (Redis is a cache: when it
        does not answer the API still serves, from PostgreSQL), else 503."""
        pool: asyncpg.Pool = request.app.state.pool
        try:
            async with pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1", timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise ApiError(503, "postgres unreachable") from exc
        cache: ReadCache = request.app.state.cache
        redis_ok = await cache.ping()
        return Health(status="ok", postgres="ok", redis="ok" if redis_ok else "unreachable")

    unavailable = {503: {"model": ErrorBody, "description": "postgres unreachable"}}
    for path in ("/health", "/api/v1/health"):
        app.add_api_route(
            path,
            health,
            methods=["GET"],
            response_model=Health,
            responses=unavailable,  # type: ignore[arg-type]
            summary="Health (no token needed)",
        )
    # the seed's §3.6 names GET /statistics at the root too
    app.add_api_route(
        "/statistics",
        read.statistics,
        methods=["GET"],
        response_model=Statistics,
        responses=errors.ERROR_RESPONSES,  # type: ignore[arg-type]
        dependencies=[Depends(reader)],
        summary="Per-scope statistics and lag (as /api/v1/statistics)",
        operation_id="statistics_root",
    )
    # outermost last: request id, then rate limit, then body size
    app.add_middleware(
        BodyLimitMiddleware,
        limit=s.max_request_bytes,
        upload_limit=s.max_upload_bytes,
        upload_path="/api/v1/cluster/batch",
    )
    app.add_middleware(
        RateLimitMiddleware,
        rate_per_minute=s.rate_per_minute,
        burst=s.rate_burst,
        known=lambda token: s.role_of(token) is not None,
    )
    app.add_middleware(errors.RequestIdMiddleware)
    return app


def serve(settings: ApiSettings, engine_config: EngineConfig | None = None) -> int:
    import uvicorn

    if settings.open:
        log.warning("CLUSTERER_API_OPEN=true: the API runs without authentication")
    app = create_app(settings, engine_config)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    return 0
