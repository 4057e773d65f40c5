"""Helpers for the service tests: a fresh topic prefix and group per test, workers as real
processes (so they can be killed), and a downstream consumer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream.settings import Settings
from stream.topics import delete_topics, ensure_topics
from tests.conftest import ROOT, Services, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Env:
    services: Services
    settings: Settings
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        out = dict(os.environ)
        out.update(
            CLUSTERER_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
            CLUSTERER_INPUT_TOPICS=",".join(s.input_topics),
            CLUSTERER_PREFIX=s.prefix,
            CLUSTERER_GROUP_ID=s.group_id,
            CLUSTERER_PARTITIONS=str(s.partitions),
            CLUSTERER_POSTGRES_DSN=s.postgres_dsn,
            CLUSTERER_REDIS_URL=s.redis_url,
            CLUSTERER_BATCH_MAX=str(s.batch_max),
            CLUSTERER_CHECKPOINT_ITEMS=str(s.checkpoint_items),
            CLUSTERER_SESSION_TIMEOUT_MS=str(s.session_timeout_ms),
        )
        out.update(extra)
        return out

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`clusterer ARGS` against this test's services, as an operator would run it."""
        return subprocess.run(
            [sys.executable, "-m", "stream.cli", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_worker(
        self, *args: str, module: str = "stream.cli", **extra: str
    ) -> WorkerProcess:
        port = free_port()
        log = ROOT / "var" / "test-logs" / f"{self.settings.prefix}-{len(self.workers)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = log.open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--log-level", "INFO", "worker", *args],
            cwd=ROOT,
            env=self.env(CLUSTERER_HTTP_PORT=str(port), **extra),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        w = WorkerProcess(proc, port, log)
        self.workers.append(w)
        return w

    def produce(
        self,
        values: Sequence[tuple[bytes | None, bytes | None]],
        topic: str | None = None,
        partition: int | None = None,
    ) -> None:
        p = Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "linger.ms": 5,
                "message.max.bytes": 1_048_000,
            }
        )
        for key, value in values:
            target = topic or self.settings.input_topics[0]
            if partition is None:
                p.produce(target, value, key=key)
            else:
                p.produce(target, value, key=key, partition=partition)
        assert p.flush(30) == 0

    def consume_all(self, topic: str, expect: int, timeout: float = 60.0) -> list[Any]:
        """Read a topic from the beginning until `expect` messages arrived."""
        c = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"reader-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        c.assign([TopicPartition(topic, p, 0) for p in range(self.settings.partitions)])
        got: list[Any] = []
        try:

            def more() -> bool:
                for m in c.consume(500, 0.5):
                    if m.error() is None:
                        got.append(m)
                return len(got) >= expect

            try:
                wait_until(more, timeout, f"{expect} messages on {topic}", 0)
            except AssertionError as exc:
                raise AssertionError(f"{exc} (got {len(got)})") from exc
            for m in c.consume(500, 1.0):  # anything beyond the expected count
                if m.error() is None:
                    got.append(m)
        finally:
            c.close()
        return got

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.settings.postgres_dsn)
            try:
                rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                return rows
            finally:
                await conn.close()

        return asyncio.run(go())

    def memberships(self) -> dict[str, str]:
        """item_id -> cluster_id of this test's scopes (scope names carry the test prefix)."""
        rows = self.sql(
            "SELECT item_id, cluster_id FROM cluster_items WHERE cluster_type LIKE $1",
            f"%{self.settings.prefix}%",
        )
        return {r["item_id"]: r["cluster_id"] for r in rows}

    def by_scope_records(self) -> list[Any]:
        """Everything the router wrote, per partition in order (the workers' input)."""
        c = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"reader-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        topic = self.settings.by_scope_topic
        out: list[Any] = []
        try:
            for p in range(self.settings.partitions):
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if hi <= lo:
                    continue
                c.assign([TopicPartition(topic, p, lo)])
                last = -1
                while last < hi - 2:  # the last offset may be a transaction marker
                    ms = c.consume(1000, 1.0)
                    if not ms:
                        break
                    for m in ms:
                        if m.error() is None:
                            out.append(m)
                            last = int(m.offset() or 0)
        finally:
            c.close()
        return out


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def http(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""


@pytest.fixture
def env(services: Services, fresh_database: tuple[str, str]) -> Iterator[Env]:
    """Fresh topics, group and database per test: no test sees another's rows (and a cache
    rebuild reads only this test's memberships)."""
    prefix, dsn = fresh_database
    s = Settings(
        kafka_bootstrap=services.kafka,
        input_topics=(f"{prefix}.in",),
        prefix=prefix,
        group_id=prefix,
        partitions=3,
        postgres_dsn=dsn,
        redis_url=services.redis,
        batch_max=300,
        checkpoint_items=400,
        session_timeout_ms=6000,  # a killed worker's partitions move on quickly
    )
    ensure_topics(s, include_inputs=True)
    e = Env(services, s)
    yield e
    for w in e.workers:
        if w.proc.poll() is None:
            w.kill9()
    delete_topics(s, include_inputs=True)
