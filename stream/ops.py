"""Operator commands: consumer lag, data-protection deletes, the synthetic producer and the
live terminal view."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from confluent_kafka import Consumer, Producer, TopicPartition

from state.db import Store
from stream import records, synthetic
from stream.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    high_watermark: int
    lag: int


def lag(s: Settings, timeout: float = 10.0) -> list[PartitionLag]:
    """Committed offset, high watermark and lag of the router group on the input topics and
    of the clustering group on the by-scope topic."""
    out: list[PartitionLag] = []
    for group, topics in ((s.router_group, s.input_topics), (s.group_id, (s.by_scope_topic,))):
        c = Consumer({**s.client_config(), "group.id": group, "enable.auto.commit": False})
        try:
            md = c.list_topics(timeout=timeout)
            tps = [
                TopicPartition(t, p)
                for t in topics
                if t in md.topics
                for p in sorted(md.topics[t].partitions)
            ]
            committed = c.committed(tps, timeout=timeout) if tps else []
            for tp in committed:
                lo, hi = c.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=timeout
                )
                off = tp.offset if tp.offset >= 0 else None
                out.append(
                    PartitionLag(
                        group,
                        tp.topic,
                        tp.partition,
                        off,
                        hi,
                        hi - (off if off is not None else lo),
                    )
                )
        finally:
            c.close()
    return out


def print_lag(rows: list[PartitionLag], fh: TextIO = sys.stdout) -> None:
    fh.write(f"{'group':<34} {'topic':<28} {'part':>4} {'committed':>10} {'high':>10} {'lag':>8}\n")
    for r in rows:
        com = "-" if r.committed is None else str(r.committed)
        row = f"{r.group:<34} {r.topic:<28} {r.partition:>4} {com:>10}"
        fh.write(f"{row} {r.high_watermark:>10} {r.lag:>8}\n")


def forget_document(s: Settings, document_id: str) -> int:
    """Delete every item of a document: a delete record to every by-scope partition per item
    (the worker owning the item's scope removes it and writes the removal). Returns the count
    of items found in Postgres."""

    async def find() -> list[tuple[str, str, str]]:
        store = await Store.connect(s.postgres_dsn, 1, 1)
        try:
            return await store.items_of_document(document_id)
        finally:
            await store.close()

    items = sorted({item for _, _, item in asyncio.run(find())})
    if not items:
        return 0
    p = Producer(s.producer_config())
    md = p.list_topics(s.by_scope_topic, timeout=10)
    n_part = len(md.topics[s.by_scope_topic].partitions)
    for item in items:
        for part in range(n_part):
            p.produce(
                s.by_scope_topic, records.encode_delete(item), key=item.encode(), partition=part
            )
    if p.flush(30):
        raise RuntimeError("delete records not delivered")
    return len(items)


_PACE_SECONDS = 0.005
"""`produce_synthetic` at a rate sleeps once it is this far ahead of its schedule: messages
leave in bursts of rate x 5 ms (the producer's linger batches them alike)."""


def produce_synthetic(
    s: Settings,
    count: int,
    dim: int,
    rate: float = 0.0,
    documents: bool = True,
    seed: int = 0,
    topic: str | None = None,
    model: str = "synthetic-mpnet",
    granularities: bool = True,
    prebuild: bool = False,
) -> int:
    """Publish the synthetic Stage 3 stream; `rate` messages/s (0: as fast as possible).
    `EmbeddedDocument`s carry the document's events, entities and storylines unless
    `granularities` is off; per-vector events (`documents=False`) are document vectors.
    `prebuild` builds every message before the first leaves (count x the message size in
    memory): a load generator sharing the machine with the service then spends its CPU on
    producing alone while it is measured (building took ~47 of its ~85 µs per 384-d event)."""
    p = Producer(s.producer_config())
    target = topic or s.input_topics[0]
    messages: Iterable[tuple[bytes, bytes]] = _synthetic_messages(
        count, dim, documents, seed, model, granularities
    )
    if prebuild:
        messages = list(messages)
    # the schedule starts once the broker has answered: messages stamped while the client
    # still connects wait for it (~0.65 s here), which a latency run would count as the
    # service's (docs/benchmarks.md, run 7)
    p.list_topics(target, timeout=30)
    t0 = time.monotonic()
    for i, (value, key) in enumerate(messages):
        while True:
            try:
                p.produce(target, value, key=key)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if rate > 0:
            # paced in bursts: a sleep per message cost more CPU than the message itself
            ahead = (i + 1) / rate - (time.monotonic() - t0)
            if ahead > _PACE_SECONDS:
                time.sleep(ahead)
    if p.flush(60):
        raise RuntimeError("synthetic messages not delivered")
    return count


def _synthetic_messages(
    count: int, dim: int, documents: bool, seed: int, model: str, granularities: bool
) -> Iterator[tuple[bytes, bytes]]:
    """(value, key) of each message of the synthetic stream, keyed by document id."""
    source: Iterator[tuple[synthetic.SyntheticItem, synthetic.DocumentFamily | None]] = (
        synthetic.stage3_stream(count, dim, seed=seed)
        if documents and granularities
        else ((item, None) for item in synthetic.stories(count, dim, seed=seed))
    )
    for item, family in source:
        if documents:
            value = synthetic.embedded_document(item, model, family)
        else:
            value = synthetic.vector_event(item, model)
        yield value, item.document_id.encode()


def watch(s: Settings, seconds: float, interval: float = 2.0, fh: TextIO = sys.stdout) -> None:
    """Live view: biggest active clusters with their labels, and the lag table."""

    async def top() -> list[tuple[str, str, int, str]]:
        store = await Store.connect(s.postgres_dsn, 1, 1)
        try:
            async with store.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT id, cluster_type, size, coalesce(label, '') AS label FROM clusters"
                    " WHERE status = 'active' ORDER BY size DESC, id LIMIT 12"
                )
            return [(r["id"], r["cluster_type"], r["size"], r["label"]) for r in rows]
        finally:
            await store.close()

    end = time.monotonic() + seconds
    while True:
        clusters = asyncio.run(top())
        if fh.isatty():
            fh.write("\x1b[2J\x1b[H")
        fh.write(f"== active clusters (top {len(clusters)}) ==\n")
        for cid, scope, size, label in clusters:
            fh.write(f"{size:>6}  {cid:<34} {scope:<28} {label}\n")
        fh.write("== lag ==\n")
        print_lag(lag(s), fh)
        fh.flush()
        if time.monotonic() >= end:
            return
        time.sleep(interval)
