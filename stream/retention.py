"""Retention in the service and on the command line (the policy and the deletes are in
state/retention.py).

The service runs it in a background thread with its own event loop and its own connection,
every CLUSTERER_RETENTION_INTERVAL_SECONDS. Why a thread and not a separate `--every N`
process: it needs no extra deployment unit (helm, compose and the operator's runbook stay as
they are), it starts and stops with the worker, and it costs the batch loop nothing it could
feel: the thread waits on PostgreSQL almost all the time (asyncpg in its own loop, so the GIL
is held only to build a few small queries per batch of deleted rows), and on the database side
each of its batches is a short transaction over rows picked with SKIP LOCKED under a
lock_timeout, so a batch commit never waits for it (docs/benchmarks.md: commit time with and
without a run in progress). With several workers, each has the thread; the advisory lock lets
one run at a time and the others skip that round.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any, TextIO

import asyncpg

from state.db import DB_ERRORS
from state.retention import TABLES, RetentionPolicy, RetentionReport, run, table_stats
from stream import metrics

log = logging.getLogger(__name__)


def publish(report: RetentionReport | None, stats: dict[str, Any] | None) -> None:
    """The run's outcome and the tables' sizes and ages as Prometheus metrics."""
    if report is None:
        metrics.retention_runs.labels("failed").inc()
    elif report.skipped:
        metrics.retention_runs.labels("skipped").inc()
    else:
        metrics.retention_runs.labels("done").inc()
        metrics.retention_run_seconds.observe(report.seconds)
        for table, n in report.removed.items():
            metrics.retention_removed.labels(table).inc(n)
    for table, st in (stats or {}).items():
        metrics.retention_table_rows.labels(table).set(st.rows)
        metrics.retention_table_bytes.labels(table).set(st.bytes)
        age = st.oldest_age_seconds
        metrics.retention_oldest_age.labels(table).set(age if age is not None else 0.0)


def publish_policy(policy: RetentionPolicy) -> None:
    """The windows as metrics, so that a dashboard and an alert can set the oldest row's age
    against them (the windows are configuration, not visible in the database)."""
    metrics.retention_window.labels("outbox").set(policy.outbox_sent_hours * 3600.0)
    metrics.retention_window.labels("clusters").set(policy.ended_cluster_seconds)
    metrics.retention_window.labels("reconsolidation_runs").set(policy.reconsolidation_seconds)


async def run_with_stats(
    dsn: str, policy: RetentionPolicy, dry_run: bool = False
) -> tuple[RetentionReport, dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        report = await run(conn, policy, dry_run)
        return report, await table_stats(conn)
    finally:
        await conn.close()


class RetentionThread(threading.Thread):
    RUN_TIMEOUT = 3600.0  # a run that takes longer is abandoned (its done batches stay done)

    def __init__(self, dsn: str, policy: RetentionPolicy, interval: float) -> None:
        super().__init__(name="retention", daemon=True)
        self.dsn = dsn
        self.policy = policy
        self.interval = interval
        self.stopping = threading.Event()
        publish_policy(policy)

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not self.stopping.wait(self.interval):
                self.run_once(loop)
        finally:
            loop.close()

    def run_once(self, loop: asyncio.AbstractEventLoop) -> RetentionReport | None:
        try:
            report, stats = loop.run_until_complete(
                asyncio.wait_for(run_with_stats(self.dsn, self.policy), self.RUN_TIMEOUT)
            )
        except DB_ERRORS as exc:
            log.warning("retention run failed (%r); next in %.0fs", exc, self.interval)
            publish(None, None)
            return None
        except Exception:
            # anything else is a bug, but the thread is the only thing that prunes the
            # database: it logs the traceback, counts a failed run and tries again next time
            log.exception("retention run failed; next in %.0fs", self.interval)
            publish(None, None)
            return None
        publish(report, stats)
        if not report.skipped and any(report.removed.values()):
            log.info("retention: %s", report.as_dict())
        return report

    def close(self, timeout: float = 5.0) -> None:
        """A run in progress is left to the process exit: its connection closes, its open
        batch rolls back, the lock is released."""
        self.stopping.set()
        self.join(timeout)


def print_report(report: RetentionReport, stats: dict[str, Any], fh: TextIO = sys.stdout) -> None:
    head = "would remove" if report.dry_run else "removed"
    fh.write(f"{'table':<26} {head:>12} {'rows now':>12} {'bytes':>14} {'oldest age s':>14}\n")
    for t in TABLES:
        st = stats[t]
        age = "-" if st.oldest_age_seconds is None else f"{st.oldest_age_seconds:.0f}"
        fh.write(f"{t:<26} {report.removed[t]:>12} {st.rows:>12} {st.bytes:>14} {age:>14}\n")
    if not report.dry_run:
        fh.write(
            f"ended clusters stamped: {report.stamped}; batches deferred to the next run:"
            f" {report.interrupted}; {report.seconds:.2f}s\n"
        )
