"""`clusterer worker`: wires settings, Postgres, Redis, Kafka, the router and the clustering
worker, each stage in a thread of its own, with HTTP health/metrics and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
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
from stream.crash_loop import CrashLoopGuard, recorder
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
        """the clustering worker's database calls (and migrations)"""
        self.router_loop = asyncio.new_event_loop()
        """the router's database calls: the stages run in different threads, and an event
        loop (with its connection pool) serves one thread"""
        self.router: Router | None = None
        self.worker: Worker | None = None
        self.store: Store | None = None
        self.router_store: Store | None = None
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
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
        if self.role in ("all", "cluster"):
            self.store = self.loop.run_until_complete(Store.connect(self.s.postgres_dsn))
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
            self.router_store = self.router_loop.run_until_complete(
                Store.connect(self.s.postgres_dsn, max_size=1)
            )
            guard = CrashLoopGuard(recorder(self.router_store, self.s.router_group, self._run_db))
            self.router = Router(self.s, self.engine_cfg, guard)

    def _run_db(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """A database call of the router (its crash-loop guard's attempts): retried while
        PostgreSQL is down."""
        delay = 0.2
        while True:
            try:
                return self.router_loop.run_until_complete(asyncio.wait_for(make(), 60))
            except DB_ERRORS as exc:
                log.warning("postgres call failed (%r); retrying in %.1fs", exc, delay)
                self.health.beat("router")
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(self) -> None:
        """Until stop is set (a signal) or a stage fails."""
        self.launch()
        self.wait()

    def launch(self) -> None:
        """The router and the clustering worker, each in a thread of its own: one stage's
        waits (the PostgreSQL commit, the broker's acknowledgements, a Kafka transaction)
        overlap with the other's work, instead of adding to it as they did in one loop."""
        stages = (("router", self.router), ("cluster", self.worker))
        self.threads = [
            threading.Thread(target=self._drive, args=(name, stage), name=f"stage-{name}")
            for name, stage in stages
            if stage is not None
        ]
        for t in self.threads:
            t.start()

    def _drive(self, name: str, stage: Router | Worker) -> None:
        """One stage's loop. After a batch that did work the next takes what is already
        fetched; an idle one waits up to the batch timeout. The first stage to fail stops
        the other one: the process exits and its restart replays from PostgreSQL."""
        busy = False
        try:
            while not self.stop.is_set():
                self.health.beat(name)
                busy = stage.poll(0.0 if busy else self.s.batch_timeout_ms / 1000) > 0
        except BaseException as exc:
            log.error("stage %s failed: %r", name, exc)
            self.errors.append(exc)
        finally:
            self.stop.set()

    def wait(self) -> None:
        """Until stop is set; then the stages finish their batches, and the first stage's
        error, if one failed, is raised here."""
        self.stop.wait()
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        """Leave the groups (a prompt rebalance for the others) and flush what is pending."""
        t0 = time.monotonic()
        if self.retention is not None:
            self.retention.close()
        if self.router is not None:
            self.router.close()
        if self.worker is not None:
            self.worker.close()
        for store, loop in ((self.store, self.loop), (self.router_store, self.router_loop)):
            if store is not None:
                loop.run_until_complete(store.close())
            loop.close()
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


def _hard_exit() -> None:
    import os

    log.error("shutdown took too long; exiting")
    os._exit(3)


def run_worker(s: Settings, engine_cfg: EngineConfig, role: Role = "all") -> int:
    svc = Service(s, engine_cfg, role)
    svc.install_signals()
    svc.start()
    try:
        svc.run()
    finally:
        svc.close()
    return 0
