"""Restart time of `clusterer worker` after kill -9: process start to the first new batch
committed in PostgreSQL, split into its phases.

    dev/services.sh up
    .venv/bin/python -m benchmarks.restart --items 20000 100000 --rounds 3

Per state size, on the real broker, database and cache (fresh topics, group and database):
`--items` events of the drifting stream of the scale benchmark (`--dim`, default 384: ~3,000
live clusters once grown) go through a real worker process, with the checkpoint interval set
so that the last checkpoint lands `--replay` items before the end; once that checkpoint is
stored and everything is published, the worker gets SIGKILL. Then, per round: `--new`
further events are produced while no worker runs, a fresh worker process starts, and the
clock runs from its spawn until PostgreSQL holds an offset beyond what it held before the kill
(polled every 50 ms, `tests.conftest.wait_until`); once that worker has committed and
published the round's events it is killed -9 in turn. Each round therefore replays the
previous rounds' new events too (the checkpoint stays where it was).

The worker runs as `benchmarks.restart_probe` (the same worker with timestamps around its
phases), so the time splits into: interpreter start, imports, service start (migrations
check, topics, PostgreSQL pool, the compiled kernel, consumers, the router's transactional
producer, outbox relay), the group join (it waits out the killed member's session:
`--session-timeout-ms`, `CLUSTERER_SESSION_TIMEOUT_MS`, 45 s by default in production), the
take-over (checkpoint read from PostgreSQL, `Engine.restore`), the replay from the checkpoint's
offset to the stored offset, and the first new batch (engine, rows, the PostgreSQL commit).
Prints one JSON line per round and one with the medians per state size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from stream.settings import Settings
from stream.synthetic import SyntheticItem, drifting_stream, vector_event
from stream.topics import delete_topics, ensure_topics
from tests.conftest import Services, own_database, wait_until
from tests.stream.conftest import Env, WorkerProcess

ROOT = Path(__file__).resolve().parents[1]
MODEL = "restart-bench"
T0 = 1.75e9  # event time of the first item (the stream's own times start at 0)


def services() -> Services:
    """The services of dev/services.sh (ports from the same variables as the test fixture)."""
    pg = int(os.environ.get("CLUSTERER_PG_PORT", "15432"))
    rd = int(os.environ.get("CLUSTERER_REDIS_PORT", "16379"))
    kafka = f"127.0.0.1:{os.environ.get('CLUSTERER_KAFKA_PORT', '19092')}"
    dsn = f"postgresql://postgres@127.0.0.1:{pg}/clusterer"
    return Services(kafka, dsn, f"redis://127.0.0.1:{rd}/0", pg, rd)


def events(n: int, dim: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, per-vector event) of the drifting stream, in stream order."""
    for x, t, ids in drifting_stream(n, dim, 1000):
        for v, ti, i in zip(x, t, ids, strict=True):
            item = SyntheticItem(f"{i}#document", i, 0, T0 + float(ti), f"story {i}", v)
            yield i.encode(), vector_event(item, MODEL)


def produce(e: Env, source: Iterator[tuple[bytes, bytes]], n: int) -> None:
    chunk: list[tuple[bytes | None, bytes | None]] = []
    for _ in range(n):
        chunk.append(next(source))
        if len(chunk) == 5000:
            e.produce(chunk)
            chunk = []
    if chunk:
        e.produce(chunk)


def read_probe(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fresh_records(path: Path) -> int:
    return sum(r["records"] for r in read_probe(path) if r["event"] == "engine" and r["fresh"])


def offsets(e: Env) -> dict[int, tuple[int, int]]:
    """partition -> (stored next offset, published offset) in PostgreSQL."""
    rows = e.sql(
        "SELECT partition, next_offset, published_offset FROM consumed_offsets"
        " WHERE consumer_group = $1",
        e.settings.group_id,
    )
    return {int(r["partition"]): (int(r["next_offset"]), int(r["published_offset"])) for r in rows}


def beyond(e: Env, partition: int, before: int) -> bool:
    """PostgreSQL holds a stored offset past `before`: a new batch is committed."""
    return offsets(e).get(partition, (0, 0))[0] > before


def checkpoint_rows(e: Env) -> dict[int, tuple[int, int]]:
    """partition -> (checkpoint offset, size in bytes)."""
    rows = e.sql(
        "SELECT partition, next_offset, length(state) AS size FROM engine_checkpoints"
        " WHERE consumer_group = $1",
        e.settings.group_id,
    )
    return {int(r["partition"]): (int(r["next_offset"]), int(r["size"])) for r in rows}


def start(e: Env, probe: Path) -> WorkerProcess:
    return e.start_worker(
        module="benchmarks.restart_probe",
        RESTART_PROBE_OUT=str(probe),
        CLUSTERER_RETENTION_INTERVAL_SECONDS="0",
    )


def settled(e: Env, probe: Path, expect: int) -> bool:
    """The worker has committed `expect` fresh records and published all of it."""
    if fresh_records(probe) < expect:
        return False
    offs = offsets(e)
    return bool(offs) and all(nxt == pub for nxt, pub in offs.values())


def phases(probe: Path, spawned: float, seen: float, partition: int, before: int) -> dict[str, Any]:
    """Seconds per phase of one restart, from the probe's timestamps."""
    ev = read_probe(probe)

    def first(name: str, **match: Any) -> dict[str, Any]:
        return next(
            r for r in ev if r["event"] == name and all(r[k] == v for k, v in match.items())
        )

    up = first("python_up")["at"]
    imported = first("imported")["t"]
    started = first("service_started")["t"]
    takes = [r for r in ev if r["event"] == "take_over"]
    load = next(r for r in ev if r["event"] == "checkpoint_loaded" and r["bytes"] > 0)
    restored = first("restored")
    fresh = first("engine", fresh=True)
    replayed = [r for r in ev if r["event"] == "engine" and not r["fresh"] and r["t"] <= fresh["t"]]
    commit = next(
        r
        for r in ev
        if r["event"] == "commit" and r["ok"] and r["offsets"].get(str(partition), -1) > before
    )
    routed = first("routed")
    assigned = min(r["start"] for r in takes)
    took_over = max(r["t"] for r in takes)
    return {
        "total_s": round(commit["t"] - spawned, 3),
        "seen_by_poll_s": round(seen - spawned, 3),
        "interpreter_s": round(up - spawned, 3),
        "imports_s": round(imported - up, 3),
        "service_start_s": round(started - imported, 3),
        "group_join_s": round(assigned - started, 3),
        "take_over_s": round(took_over - assigned, 3),
        "checkpoint_read_s": round(load["t"] - load["start"], 3),
        "restore_s": round(restored["t"] - restored["start"], 3),
        "replay_s": round(fresh["start"] - took_over, 3),
        "replay_engine_s": round(sum(r["t"] - r["start"] for r in replayed), 3),
        "replayed_records": sum(r["records"] for r in replayed),
        "first_routed_after_spawn_s": round(routed["t"] - spawned, 3),
        "first_batch_s": round(commit["t"] - fresh["start"], 3),
        "first_batch_records": fresh["records"],
        "total_without_join_s": round(commit["t"] - spawned - (assigned - started), 3),
    }


def run_size(
    svc: Services, items: int, dim: int, replay: int, new: int, rounds: int, session_ms: int
) -> list[dict[str, Any]]:
    prefix = f"rs{uuid.uuid4().hex[:8]}"
    with own_database(svc.postgres, prefix) as dsn:
        return _run_size(svc, prefix, dsn, items, dim, replay, new, rounds, session_ms)


def _run_size(
    svc: Services,
    prefix: str,
    dsn: str,
    items: int,
    dim: int,
    replay: int,
    new: int,
    rounds: int,
    session_ms: int,
) -> list[dict[str, Any]]:
    s = Settings(
        kafka_bootstrap=svc.kafka,
        input_topics=(f"{prefix}.in",),
        prefix=prefix,
        group_id=prefix,
        partitions=3,
        postgres_dsn=dsn,
        redis_url=svc.redis,
        checkpoint_items=items - replay,
        session_timeout_ms=session_ms,
    )
    ensure_topics(s, include_inputs=True)
    e = Env(svc, s)
    out: list[dict[str, Any]] = []
    workdir = ROOT / "var" / "test-logs" / prefix
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        source = events(items + rounds * new, dim)
        produce(e, source, items)
        probe = workdir / "build.jsonl"
        t0 = time.monotonic()
        w = start(e, probe)
        wait_until(
            lambda: settled(e, probe, items) and checkpoint_rows(e),
            items / 200 + 120,
            f"{items} events committed, published and checkpointed",
            0.5,
        )
        build_s = time.monotonic() - t0
        ck = checkpoint_rows(e)
        ((partition, (ck_offset, ck_bytes)),) = ck.items()
        logging.warning("%d events clustered in %.0f s; checkpoint %.1f MB at offset %d",
                        items, build_s, ck_bytes / 1e6, ck_offset)  # fmt: skip
        for r in range(rounds):
            w.kill9()
            before = offsets(e)[partition][0]
            produce(e, source, new)
            probe = workdir / f"round{r}.jsonl"
            spawned = time.time()
            w = start(e, probe)
            wait_until(partial(beyond, e, partition, before), 300, "the first new commit", 0.05)
            seen = time.time()
            wait_until(partial(settled, e, probe, new), 300, "the round's events published", 0.2)
            row = {
                "items": items,
                "dim": dim,
                "round": r + 1,
                "checkpoint_mb": round(ck_bytes / 1e6, 1),
                "checkpoint_offset": ck_offset,
                "stored_offset_before_kill": before,
                **phases(probe, spawned, seen, partition, before),
            }
            print(json.dumps(row), flush=True)
            out.append(row)
        w.kill9()
    finally:
        for wp in e.workers:
            if wp.proc.poll() is None:
                wp.kill9()
        delete_topics(s, include_inputs=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--replay", type=int, default=0, help="items after the last checkpoint")
    ap.add_argument("--new", type=int, default=500, help="events produced per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    args = ap.parse_args()
    svc = services()
    for items in args.items:
        rows = run_size(
            svc, items, args.dim, args.replay, args.new, args.rounds, args.session_timeout_ms
        )
        med = {
            k: round(statistics.median(r[k] for r in rows), 3)
            for k in rows[0]
            if k.endswith("_s") or k == "replayed_records"
        }
        print(json.dumps({"items": items, "dim": args.dim, "median_of": len(rows), **med}))


if __name__ == "__main__":
    main()
