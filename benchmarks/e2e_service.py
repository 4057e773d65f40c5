"""End-to-end throughput, latency and scale-out of the service on the real broker, database
and cache (docs/benchmarks.md, "The service end to end").

    dev/services.sh up
    .venv/bin/python -m benchmarks.e2e_service throughput --dim 384 --count 30000 [--rounds 5]
    .venv/bin/python -m benchmarks.e2e_service latency --dim 384 --count 20000 --rounds 3
    .venv/bin/python -m benchmarks.e2e_service scaleout --dim 384 --count 100000

throughput: a backlog of per-vector events is produced first; then one worker (router and
clustering worker in one loop, as `clusterer worker` runs, here in this process) starts and
the clock runs until every event is assigned, committed to PostgreSQL and published. The
Kafka floor (`benchmarks/kafka_floor.py`: the same hops, no work) runs before and after it
on the same broker, dimension and count; the ratio is to the floors' mean (`--no-floor`
skips them); `--rounds N` (also for latency) runs all that N times and ends with the medians.
Reported: CPU per event of every process (the worker with its threads by name, the broker,
PostgreSQL, Redis) and µs per event of every step, thread CPU and wall, from the worker's
step clock (`stream/steps.py`).
latency: the maximum is measured first with a backlog (unless `--rate` is given), then a
producer process publishes at half of it while the worker runs; latency is the assignment
message's CreateTime minus the input message's CreateTime (same host clock); the producer
builds its messages before it sends the first (`--prebuild`), so that while it is measured
it only produces (its CPU per event still counts the building). The engine runs
with a small `reconsolidate_items` so that reconsolidations happen during the test. Before the
producer starts, 200 events go through every hop (`warm_pipeline`); the percentiles count the
paced events from `SETTLE_SECONDS` after the first, and the first seconds' maximum is printed
apart.
Each run has a database and cache namespace of its own, removed at its end (`scratch`).
scaleout: a backlog over two scopes on different halves of the by-scope partitions, then one
`clusterer worker` process, then two (fresh topics, same data).
Each prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks import kafka_floor
from benchmarks.cpu import (
    own_cpu_seconds,
    per_event_us,
    pid_cpu_seconds,
    service_cpu_seconds,
    thread_cpu_seconds,
)
from benchmarks.scratch import own_state
from processors import Engine, EngineConfig
from stream import metrics
from stream.service import Service, freeze_startup
from stream.settings import Settings
from stream.topics import delete_topics, ensure_topics

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def settings(partitions: int) -> Iterator[Settings]:
    """A fresh prefix and group, and a database and cache namespace of the run's own
    (`benchmarks.scratch`), removed when it ends; services from the environment
    (dev/services.sh env)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    base = Settings.from_env()
    with own_state(base.postgres_dsn, base.redis_url, prefix) as dsn:
        yield Settings.from_env(
            input_topics=(f"{prefix}.in",),
            prefix=prefix,
            group_id=prefix,
            partitions=partitions,
            postgres_dsn=dsn,
        )


def produce_backlog(
    s: Settings, count: int, dim: int, model: str | None = None, seed: int = 0
) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable, "-m", "stream.cli", "produce", "--count", str(count),
            "--dim", str(dim), "--vector-events", "--bootstrap", s.kafka_bootstrap,
            "--model", model or f"{s.prefix}-model", "--seed", str(seed),
        ],
        cwd=ROOT, env={**os.environ, "CLUSTERER_INPUT_TOPICS": s.input_topics[0]},
        check=True, capture_output=True,
    )  # fmt: skip
    del out
    return time.perf_counter() - t0


def clock_totals(svc: Service) -> tuple[dict[str, float], dict[str, float]]:
    """(wall, thread CPU) seconds per step so far, of the worker and the in-loop router."""
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for part in (svc.worker, svc.router):
        if part is not None:
            wall.update(part.clock.wall)
            cpu.update(part.clock.cpu)
    return wall, cpu


def step_us(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """µs per event of each step between two snapshots of running totals."""
    return {k: round((v - before.get(k, 0.0)) / count * 1e6, 1) for k, v in after.items()}


def assigned() -> float:
    for fam in metrics.REGISTRY.collect():
        if fam.name == "clusterer_items_assigned":
            for smp in fam.samples:
                if smp.name.endswith("_total"):
                    return float(smp.value)
    return 0.0


def warm_up(svc: Service) -> None:
    """Group join, partition assignment and the Redis rebuild happen before the clock runs
    (the by-scope topic is still empty: the router has not polled yet)."""
    assert svc.worker is not None
    deadline = time.monotonic() + 60
    while not svc.worker.runs or svc.worker.cache.needs_rebuild:
        svc.worker.poll()
        if time.monotonic() > deadline:
            raise RuntimeError("worker did not get its partitions")


WARM_UP_EVENTS = 200
SETTLE_SECONDS = 2.0
"""The paced run's first seconds are reported apart (`first_seconds_max_ms`), not in the
percentiles: a fresh producer client holds its first ~0.5 s of stamped messages while it
sets up (measured at the broker by a separate consumer: up to 0.52 s, 9-14 ms median after),
and the service then works through that burst for ~1.5 s (docs/benchmarks.md, run 7)."""


def warm_pipeline(svc: Service, s: Settings, dim: int) -> None:
    """A few events through every hop before the paced producer starts, kept out of the
    latencies: a cold pipeline (the router's first fetches and transaction, the compiled
    kernels' first load, the first output transaction) held the first second's events for up
    to ~1.3 s, 5 % of a 30 s run's events, which set its p99 (docs/benchmarks.md, run 7).
    The restart benchmark measures the cold start; this one, the pipeline under load."""
    base = assigned()
    produce_backlog(s, WARM_UP_EVENTS, dim, seed=1)  # other item ids than the paced seed 0
    deadline = time.monotonic() + 120
    busy = False
    while assigned() - base < WARM_UP_EVENTS:
        busy = svc.round(busy) > 0
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up events were not assigned")


def process_env(s: Settings) -> dict[str, str]:
    """The environment of a `clusterer worker` process on this benchmark's topics."""
    return {
        **os.environ,
        "CLUSTERER_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "CLUSTERER_INPUT_TOPICS": s.input_topics[0],
        "CLUSTERER_PREFIX": s.prefix,
        "CLUSTERER_POSTGRES_DSN": s.postgres_dsn,
        "CLUSTERER_GROUP_ID": s.group_id,
        "CLUSTERER_PARTITIONS": str(s.partitions),
        "CLUSTERER_HTTP_PORT": "0",
    }


def wait_routing(s: Settings, limit: float = 120.0) -> None:
    """Until the router process has produced its first by-scope record."""
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"wm-{uuid.uuid4()}"})
    deadline = time.monotonic() + limit
    try:
        while True:
            tps = [TopicPartition(s.by_scope_topic, p) for p in range(s.partitions)]
            if sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps) > 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the router process routed nothing")
            time.sleep(0.005)
    finally:
        c.close()


def router_process(s: Settings) -> subprocess.Popen[bytes]:
    """`clusterer worker --role router` for this benchmark's topics, in its own process."""
    env = process_env(s)
    cmd = [sys.executable, "-m", "stream.cli", "worker", "--role", "router"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def throughput(
    count: int, dim: int, partitions: int, split: bool, cfg: EngineConfig | None = None
) -> dict[str, object]:
    with settings(partitions) as s:
        return _throughput(s, count, dim, split, cfg)


def _throughput(
    s: Settings, count: int, dim: int, split: bool, cfg: EngineConfig | None
) -> dict[str, object]:
    ensure_topics(s, include_inputs=True)
    produce_s = produce_backlog(s, count, dim)
    svc = Service(s, cfg or EngineConfig(), role="cluster" if split else "all", serve_http=False)
    svc.start()
    freeze_startup()  # as `clusterer worker` does
    assert svc.worker is not None
    warm_up(svc)
    router = router_process(s) if split else None
    if router is not None:  # its start-up (imports, group join) is not the service's rate
        wait_routing(s)
    base = assigned()
    wall0, tcpu0 = clock_totals(svc)
    cpu0, svc0, threads0 = own_cpu_seconds(), service_cpu_seconds(), thread_cpu_seconds()
    router0 = pid_cpu_seconds(router.pid) if router is not None else 0.0
    router_wall = 0.0
    t0 = time.perf_counter()
    busy = False
    while assigned() - base < count:
        r0 = time.perf_counter()
        busy = svc.round(busy) > 0  # what `Service.run` repeats
        router_wall += time.perf_counter() - r0
    dt = time.perf_counter() - t0
    cpu1, svc1, threads1 = own_cpu_seconds(), service_cpu_seconds(), thread_cpu_seconds()
    router_cpu = pid_cpu_seconds(router.pid) - router0 if router is not None else 0.0
    if router is not None:
        router.terminate()
        router.wait(60)
    wall1, tcpu1 = clock_totals(svc)
    steps = step_us(wall0, wall1, count)
    steps_cpu = step_us(tcpu0, tcpu1, count)
    svc.worker.poll()  # lets the idle path settle the published offsets
    svc.close()
    delete_topics(s, include_inputs=True)
    worker_cpu = round((cpu1 - cpu0) / count * 1e6, 1)
    services = per_event_us(svc0, svc1, count)
    steps["loop"] = round(router_wall / count * 1e6, 1)  # wall inside Service.round
    return {
        "mode": "throughput" + (" (router in its own process)" if split else ""),
        "dim": dim,
        "events": count,
        "events_per_s": round(count / dt),
        "seconds": round(dt, 2),
        "backlog_produce_seconds": round(produce_s, 2),
        "wall_us_per_event_by_step": steps,
        "thread_cpu_us_per_event_by_step": steps_cpu,
        "worker_process_cpu_us_per_event": worker_cpu,
        "worker_threads_cpu_us_per_event": {
            k: v for k, v in per_event_us(threads0, threads1, count).items() if v >= 0.5
        },
        "services_cpu_us_per_event": services,
        "router_process_cpu_us_per_event": round(router_cpu / count * 1e6, 1),
        "cpu_us_per_event_all_processes": round(
            worker_cpu + sum(services.values()) + router_cpu / count * 1e6, 1
        ),
    }


def with_floor(count: int, dim: int, partitions: int, split: bool) -> dict[str, object]:
    """Floor, service, floor in one run on the same broker, dimension and count: the ratio
    to the mean of the two floors survives the machine's noise."""
    bootstrap = Settings.from_env().kafka_bootstrap
    floor_a = kafka_floor.run(bootstrap, count, dim, partitions, 2000)
    svc = throughput(count, dim, partitions, split)
    floor_b = kafka_floor.run(bootstrap, count, dim, partitions, 2000)
    floor_rate = (int(floor_a["events_per_s"]) + int(floor_b["events_per_s"])) / 2
    floor_cpu = [
        float(f["python_cpu_us_per_event"]) + sum(f["services_cpu_us_per_event"].values())
        for f in (floor_a, floor_b)
    ]
    return {
        **svc,
        "floor_events_per_s": [floor_a["events_per_s"], floor_b["events_per_s"]],
        "ratio_to_floor": round(int(str(svc["events_per_s"])) / floor_rate, 3),
        "floor_cpu_us_per_event_all_processes": [round(c, 1) for c in floor_cpu],
    }


MEDIAN_KEYS = {
    "throughput": (
        "events_per_s",
        "ratio_to_floor",
        "cpu_us_per_event_all_processes",
        "worker_process_cpu_us_per_event",
    ),
    "latency": ("offered_events_per_s", "p50_ms", "p99_ms", "max_ms"),
}


def medians(mode: str, rounds: list[dict[str, object]]) -> dict[str, object]:
    """The median of each headline figure of a mode over `--rounds` runs: one throughput
    run's ratio moved by 1.5x with the floor minutes apart, and one latency run's p99 by
    5x (docs/benchmarks.md, runs 8-10)."""
    out: dict[str, object] = {"mode": f"{mode}, median of rounds", "rounds": len(rounds)}
    for key in MEDIAN_KEYS[mode]:
        values = [float(str(r[key])) for r in rounds if key in r]
        if values:
            out[key] = round(float(np.median(values)), 3)
    return out


def latency(
    rate: float, seconds: float, dim: int, partitions: int, split: bool, cfg: EngineConfig
) -> dict[str, object]:
    with settings(partitions) as s:
        return _latency(s, rate, seconds, dim, split, cfg)


def _latency(
    s: Settings, rate: float, seconds: float, dim: int, split: bool, cfg: EngineConfig
) -> dict[str, object]:
    ensure_topics(s, include_inputs=True)
    count = int(rate * seconds)
    svc = Service(s, cfg, role="cluster" if split else "all", serve_http=False)
    svc.start()
    freeze_startup()  # as `clusterer worker` does
    assert svc.worker is not None
    warm_up(svc)
    router = router_process(s) if split else None
    warm_pipeline(svc, s, dim)
    start_ms = time.time() * 1000  # CreateTime of the paced events: from here on
    children0 = children_cpu_seconds()  # the producer's, once it is waited for
    producer = subprocess.Popen(
        [
            sys.executable, "-m", "stream.cli", "produce", "--count", str(count),
            "--dim", str(dim), "--vector-events", "--rate", str(rate), "--prebuild",
            "--bootstrap", s.kafka_bootstrap, "--model", f"{s.prefix}-model",
        ],
        cwd=ROOT, env={**os.environ, "CLUSTERER_INPUT_TOPICS": s.input_topics[0]},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = assigned()
    wall0, tcpu0 = clock_totals(svc)
    cpu0, svc0 = own_cpu_seconds(), service_cpu_seconds()
    recon0 = reconsolidations()
    batches0, txns0 = batches(), batches("router_txn")
    busy = False
    while assigned() - base < count:
        busy = svc.round(busy) > 0  # what `Service.run` repeats
        if producer.poll() not in (None, 0):
            raise RuntimeError("producer failed")
    cpu1, svc1 = own_cpu_seconds(), service_cpu_seconds()
    producer.wait(60)  # (the loop's poll may have waited for it already)
    producer_cpu = children_cpu_seconds() - children0  # the producer: the only child waited
    if router is not None:
        router.terminate()
        router.wait(60)
    recon = reconsolidations()
    wall1, tcpu1 = clock_totals(svc)
    svc.close()
    sent = read_times(s, s.input_topics[0], lambda v: json.loads(v)["item_id"])
    done = read_times(s, s.assignments_topic, None)
    delete_topics(s, include_inputs=True)
    paced = {k: t for k, t in sent.items() if t >= start_ms and k in done}
    settled = min(paced.values(), default=0) + SETTLE_SECONDS * 1000
    lat = np.array([done[k] - t for k, t in paced.items() if t >= settled], dtype=np.float64)
    first = [done[k] - t for k, t in paced.items() if t < settled]
    return {
        "mode": "latency" + (" (router in its own process)" if split else ""),
        "dim": dim,
        "offered_events_per_s": rate,
        "events": int(lat.size),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "first_seconds_not_counted": SETTLE_SECONDS,
        "first_seconds_max_ms": float(max(first, default=0.0)),
        "events_per_batch": round(count / max(batches() - batches0, 1), 1),
        "events_per_router_transaction": (
            None if split else round(count / max(batches("router_txn") - txns0, 1), 1)
        ),
        "worker_process_cpu_us_per_event": round((cpu1 - cpu0) / count * 1e6, 1),
        "services_cpu_us_per_event": per_event_us(svc0, svc1, count),
        "producer_process_cpu_us_per_event": round(producer_cpu / count * 1e6, 1),
        "batches_with_reconsolidation": int(recon[0] - recon0[0]),
        "reconsolidation_wait_max_s": recon[1],
        "wall_us_per_event_by_step": step_us(wall0, wall1, count),
        "thread_cpu_us_per_event_by_step": step_us(tcpu0, tcpu1, count),
    }


def children_cpu_seconds() -> float:
    """User + system CPU of the child processes waited for so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def batches(step: str = "total") -> float:
    """Batches so far that went through `step` of `clusterer_batch_seconds` (total: the
    clustering batches committed; router_txn: the router's transactions in this process)."""
    for fam in metrics.REGISTRY.collect():
        if fam.name == "clusterer_batch_seconds":
            for x in fam.samples:
                if x.name.endswith("_count") and x.labels.get("step") == step:
                    return x.value
    return 0.0


def reconsolidations() -> tuple[float, float]:
    """(batches that applied a reconsolidation, the longest such batch's upper bucket)."""
    count, top = 0.0, 0.0
    for fam in metrics.REGISTRY.collect():
        if fam.name == "clusterer_reconsolidation_seconds":
            last = 0.0
            for x in fam.samples:
                if x.name.endswith("_count"):
                    count = x.value
                elif x.name.endswith("_bucket"):
                    le = float(x.labels["le"])
                    if x.value > last and top < le:
                        top = le
                    last = x.value
    return count, top


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for a key, as the
    service's producers are configured (`murmur2_random`)."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    whole = len(key) & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    rest = key[whole:]
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h = ((h ^ rest[0]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def two_models(prefix: str, partitions: int) -> tuple[str, str]:
    """Two embedding models whose scopes land on by-scope partitions in different halves,
    which the range assignor gives to different members of a two-worker group."""
    scoper = Engine(EngineConfig())
    half = partitions // 2
    found: dict[bool, str] = {}
    for i in range(1000):
        model = f"{prefix}-m{i}"
        name = scoper.scope_key("document", model, {}).name.encode()
        found.setdefault(murmur2_partition(name, partitions) < half, model)
        if len(found) == 2:
            return found[True], found[False]
    raise RuntimeError("no two models on different halves")


def worker_process(s: Settings) -> subprocess.Popen[bytes]:
    """`clusterer worker` (router and clustering worker in one loop) for these topics."""
    env = process_env(s)
    cmd = [sys.executable, "-m", "stream.cli", "worker"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


def published(c: Consumer, topic: str, partitions: int) -> int:
    """Messages on a topic (idempotent, non-transactional producer: offsets = messages)."""
    total = 0
    for p in range(partitions):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += hi - lo
    return total


def groups_settled(admin: AdminClient, groups: list[str], members: int) -> bool:
    """Every group is stable with `members` members, each holding partitions."""
    for fut in admin.describe_consumer_groups(groups).values():
        g = fut.result(10)
        if str(g.state).rsplit(".", 1)[-1] != "STABLE" or len(g.members) != members:
            return False
        if any(not m.assignment.topic_partitions for m in g.members):
            return False
    return True


def scale_run(count: int, dim: int, partitions: int, workers: int) -> dict[str, object]:
    """A two-scope backlog, then `workers` worker processes in one group; the rate counts
    from the first moment that assignments are being published and both of the service's
    groups (router and worker) are stable with every process holding partitions, to the
    last assignment (start-up, take-over, group join and the rebalances while the
    processes join are excluded)."""
    with settings(partitions) as s:
        return _scale_run(s, count, dim, partitions, workers)


def _scale_run(
    s: Settings, count: int, dim: int, partitions: int, workers: int
) -> dict[str, object]:
    ensure_topics(s, include_inputs=True)
    models = two_models("scale", partitions)
    for i, model in enumerate(models):
        produce_backlog(s, count // 2, dim, model, seed=i + 1)
    total = count // 2 * 2
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"w-{uuid.uuid4()}"})
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    procs = [worker_process(s) for _ in range(workers)]
    cpu0: dict[int, float] = {}
    svc0: dict[str, float] = {}
    n0 = 0
    t0 = 0.0
    deadline = time.monotonic() + 900
    try:
        while True:
            n = published(c, s.assignments_topic, partitions)
            if not t0 and n and groups_settled(admin, [s.group_id, s.router_group], workers):
                t0, n0 = time.perf_counter(), n
                cpu0 = {x.pid: pid_cpu_seconds(x.pid) for x in procs}
                svc0 = service_cpu_seconds()
            if n >= total:
                break
            if any(x.poll() is not None for x in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"workers stopped or too slow: {n} of {total}")
            time.sleep(0.05)
        if not t0:
            raise RuntimeError("every event was published before the groups settled: raise --count")
        dt = time.perf_counter() - t0
        cpu = sum(pid_cpu_seconds(x.pid) - cpu0[x.pid] for x in procs)
        svc1 = service_cpu_seconds()
        by_scope = [
            p for p in range(partitions)
            if c.get_watermark_offsets(TopicPartition(s.by_scope_topic, p), timeout=10)[1] > 0
        ]  # fmt: skip
    finally:
        for x in procs:
            x.terminate()
        for x in procs:
            x.wait(60)
        c.close()
    delete_topics(s, include_inputs=True)
    measured = total - n0
    return {
        "mode": f"scale-out: {workers} worker process(es), two scopes",
        "dim": dim,
        "events": total,
        "events_measured": measured,
        "events_per_s": round(measured / dt),
        "by_scope_partitions_used": by_scope,
        "worker_processes_cpu_us_per_event": round(cpu / measured * 1e6, 1),
        "services_cpu_us_per_event": per_event_us(svc0, svc1, measured),
    }


def read_times(s: Settings, topic: str, key_of: object) -> dict[str, int]:
    """item id -> CreateTime (ms) of every message of a topic."""
    c = Consumer(
        {"bootstrap.servers": s.kafka_bootstrap, "group.id": f"lat-{uuid.uuid4()}",
         "enable.auto.commit": False}
    )  # fmt: skip
    out: dict[str, int] = {}
    try:
        for p in range(s.partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi <= lo:
                continue
            c.assign([TopicPartition(topic, p, lo)])
            last = lo - 1
            while last < hi - 1:
                ms = c.consume(5000, 2.0)
                if not ms:
                    break
                for m in ms:
                    if m.error() is not None:
                        continue
                    last = int(m.offset() or 0)
                    key = key_of(m.value()) if callable(key_of) else (m.key() or b"").decode()
                    out[key] = int(m.timestamp()[1])
    finally:
        c.close()
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("throughput", "latency", "scaleout"))
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--count", type=int, default=30_000)
    ap.add_argument(
        "--rate", type=float, default=0,
        help="offered events/s; 0: half the backlog rate measured first in this run",
    )  # fmt: skip
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--split", action="store_true", help="router in its own process")
    ap.add_argument("--no-floor", action="store_true", help="throughput without the floor")
    ap.add_argument(
        "--rounds", type=int, default=1,
        help="throughput, latency: runs in a row, each printed, then the medians of their figures",
    )  # fmt: skip
    ap.add_argument(
        "--reconsolidate-items", type=int, default=5_000,
        help="latency: the engine's reconsolidate_items, so that runs happen during the test",
    )  # fmt: skip
    args = ap.parse_args()
    if args.mode == "scaleout":  # one process, then two, on the same backlog
        for workers in (1, 2):
            print(json.dumps(scale_run(args.count, args.dim, args.partitions, workers)))
        return
    rounds = []
    for _ in range(args.rounds):
        out = _one_round(args)
        print(json.dumps(out), flush=True)
        rounds.append(out)
    if args.rounds > 1:
        print(json.dumps(medians(args.mode, rounds)))


def _one_round(args: argparse.Namespace) -> dict[str, object]:
    if args.mode == "throughput":
        if args.no_floor:
            return throughput(args.count, args.dim, args.partitions, args.split)
        return with_floor(args.count, args.dim, args.partitions, args.split)
    cfg = EngineConfig(reconsolidate_items=args.reconsolidate_items)
    rate = args.rate
    if rate <= 0:
        best = throughput(args.count, args.dim, args.partitions, args.split, cfg)
        print(json.dumps(best), flush=True)
        rate = round(int(str(best["events_per_s"])) / 2)
    return latency(rate, args.seconds, args.dim, args.partitions, args.split, cfg)


if __name__ == "__main__":
    main()
