"""`clusterer worker`: wires settings, Postgres, Redis, Kafka, the router and the clustering
worker into one loop, with HTTP health/metrics and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, Literal

from threadpoolctl import threadpool_limits

from processors import EngineConfig, warm_up
from state.cache import Cache
from state.db import DB_ERRORS, Store, migrate
from stream.crash_loop import CrashLoopGuard, StoredAttempts
from stream.http import Health, serve
from stream.retention import RetentionThread
from stream.router import Router
from stream.settings import Settings
from stream.topics import ensure_topics
from stream.worker import Worker

log = logging.getLogger(__name__)
Role = Literal["all", "router", "cluster"]


def limit_threads(threads: int) -> None:
    """Cap the native thread pools the engine's numpy and FAISS load (OpenBLAS, OpenMP) at
    `CLUSTERER_BLAS_THREADS`. The engine's matrix products are small; OpenBLAS's idle
    threads spin after each one and, on a machine shared with the broker and PostgreSQL,
    doubled the worker's CPU per event (docs/benchmarks.md). 0 leaves the libraries' own
    defaults."""
    if threads > 0:
        threadpool_limits(limits=threads)


class Service:
    def __init__(
        self, s: Settings, engine_cfg: EngineConfig, role: Role = "all", serve_http: bool = True
    ) -> None:
        self.s = s
        self.engine_cfg = engine_cfg
        self.role = role
        self.serve_http = serve_http
        self.stop = threading.Event()
        self.health = Health()
        self.loop = asyncio.new_event_loop()
        self.router: Router | None = None
        self.worker: Worker | None = None
        self.store: Store | None = None
        self.retention: RetentionThread | None = None

    def start(self) -> None:
        limit_threads(self.s.blas_threads)
        if self.s.migrate_on_start:
            applied = self.loop.run_until_complete(migrate(self.s.postgres_dsn))
            if applied:
                log.info("migrations applied: %s", ", ".join(applied))
        ensure_topics(self.s)
        if self.serve_http:
            serve(self.health, self.s.http_port)
        self.store = self.loop.run_until_complete(Store.connect(self.s.postgres_dsn))
        if self.role in ("all", "cluster"):
            warm_up()
            cache = Cache(self.s.redis_url, self.s.prefix)
            self.worker = Worker(self.s, self.engine_cfg, self.store, cache, self.loop, self.health)
            self.worker.relay_outbox()
            self.health.ready_check = self.worker.ready
            if self.s.retention_interval_seconds > 0:  # off the hot path: see its docstring
                self.retention = RetentionThread(
                    self.s.postgres_dsn,
                    self.s.retention_policy(),
                    self.s.retention_interval_seconds,
                )
                self.retention.start()
        else:
            self.health.ready_check = lambda: (True, {"role": self.role})
        if self.role in ("all", "router"):
            # the router's attempts go through the worker's retrying call when there is one
            run = self.worker.protocol.db if self.worker is not None else self._run_db
            guard = CrashLoopGuard(StoredAttempts(self.store, self.s.router_group, run))
            self.router = Router(self.s, self.engine_cfg, guard)

    def _run_db(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """A database call of a router-only process: retried while PostgreSQL is down."""
        delay = 0.2
        while True:
            try:
                return self.loop.run_until_complete(asyncio.wait_for(make(), 60))
            except DB_ERRORS as exc:
                log.warning("postgres call failed (%r); retrying in %.1fs", exc, delay)
                self.health.beat()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(self) -> None:
        """Until stop is set: one router batch, one clustering batch, repeat."""
        busy = False
        while not self.stop.is_set():
            self.health.beat()
            busy = self.round(busy) > 0

    def round(self, busy: bool) -> int:
        """One router batch, then one clustering batch; returns the messages they took.
        With both stages in this one loop, a stage that waits for a full batch holds the
        other one up: after a round that did work (`busy`) each takes what is already
        fetched and goes on; an idle round waits up to the batch timeout, shared by the
        stages that run here."""
        stages = [x for x in (self.router, self.worker) if x is not None]
        wait = 0.0 if busy else self.s.batch_timeout_ms / 1000 / max(len(stages), 1)
        return sum(stage.poll(wait) for stage in stages)

    def close(self) -> None:
        """Leave the groups (a prompt rebalance for the others) and flush what is pending."""
        t0 = time.monotonic()
        if self.retention is not None:
            self.retention.close()
        if self.router is not None:
            self.router.close()
        if self.worker is not None:
            self.worker.close()
        if self.store is not None:
            self.loop.run_until_complete(self.store.close())
        self.loop.close()
        log.info("worker stopped in %.1fs", time.monotonic() - t0)

    def install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current batch", signum)
            self.stop.set()
            # a second signal, or a stop that takes too long, ends the process the hard way
            timer = threading.Timer(self.s.shutdown_seconds, lambda: _hard_exit())
            timer.daemon = True
            timer.start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def freeze_startup() -> None:
    """Start-up's objects (modules, clients, compiled kernels: ~220,000) live as long as the
    process. Frozen, the cyclic collector's full passes stop scanning them: each pass holds
    the GIL, so it stalls the loop and the committer alike (a full pass over them took
    ~107 ms here, 0 once frozen; docs/benchmarks.md, run 7). Called by the process's entry
    point, not by `start`, so that a test process starting services keeps its own
    collector as is."""
    gc.collect()
    gc.freeze()


def _hard_exit() -> None:
    import os

    log.error("shutdown took too long; exiting")
    os._exit(3)


def run_worker(s: Settings, engine_cfg: EngineConfig, role: Role = "all") -> int:
    svc = Service(s, engine_cfg, role)
    svc.install_signals()
    svc.start()
    freeze_startup()
    try:
        svc.run()
    finally:
        svc.close()
    return 0
