"""The reliability protocol's decisions on every failure path, with fakes for Kafka and
PostgreSQL (the real services prove the whole in tests/stream/test_service.py and
tests/stream/test_worker.py): fast, and each failure injected exactly where it matters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from confluent_kafka import TopicPartition

from processors import EngineConfig
from state.cache import Cache
from state.db import BatchWrite, Fenced, OffsetRow, PartitionState
from stream import metrics
from stream.http import Health
from stream.protocol import BatchProtocol, Pending

TOPIC = "by-scope"
ROW = ("c1", "scope-a", "document", "item-1", "doc-1", 0.9, 1.0)


class FakePool:
    def __init__(self) -> None:
        self.expired = 0

    async def expire_connections(self) -> None:
        self.expired += 1


class FakeStore:
    """PostgreSQL as the protocol sees it: one transaction per commit (all or nothing),
    the offset fence, the outbox, the crash-loop guard's attempts."""

    def __init__(self) -> None:
        self.pool = FakePool()
        self.offsets: dict[int, tuple[int, int]] = {}  # partition -> (next, published)
        self.items: list[tuple[Any, ...]] = []
        self.outbox: dict[str, dict[str, Any]] = {}
        self.sent: set[str] = set()
        self.commits = 0
        self.fail_commits: list[BaseException] = []
        self.attempts: dict[tuple[str, int, int], int] = {}
        self.mark_sent_calls = 0

    async def load_partition(self, group: str, topic: str, partition: int) -> PartitionState:
        st = PartitionState()
        if partition in self.offsets:
            st.next_offset, st.published_offset = self.offsets[partition]
        return st

    async def commit(self, b: BatchWrite) -> None:
        if self.fail_commits:
            raise self.fail_commits.pop(0)  # the connection died: nothing of it applied
        for o in b.offsets:
            cur = self.offsets.get(o.partition)
            if (cur is None) != (o.expected is None) or (cur and cur[0] != o.expected):
                raise Fenced(o.topic, o.partition, o.expected)
        for o in b.offsets:
            old_pub = self.offsets.get(o.partition, (0, -1))[1]
            self.offsets[o.partition] = (o.next_offset, max(old_pub, o.published))
        self.items.extend(b.items)
        for eid, topic, key, payload, headers in b.outbox:
            self.outbox.setdefault(
                eid,
                {"event_id": eid, "topic": topic, "key": key, "payload": payload,
                 "headers": headers},
            )  # fmt: skip
        self.sent.update(b.sent_event_ids)
        self.commits += 1

    async def close(self) -> None:
        return None

    async def unsent(self) -> list[dict[str, Any]]:
        return [r for eid, r in self.outbox.items() if eid not in self.sent]

    async def mark_sent(self, ids: list[str]) -> None:
        self.mark_sent_calls += 1
        self.sent.update(ids)

    async def record_attempts(
        self, group: str, spans: list[tuple[str, int, int, int]]
    ) -> dict[tuple[str, int], tuple[int, int]]:
        out = {}
        for t, p, first, last in spans:
            n = self.attempts[(t, p, first)] = self.attempts.get((t, p, first), 0) + 1
            out[(t, p)] = (n, last)
        return out

    async def withdraw_attempts(self, group: str, spans: list[tuple[str, int, int]]) -> None:
        for t, p, first in spans:
            if self.attempts.get((t, p, first), 0) > 0:
                self.attempts[(t, p, first)] -= 1

    async def memberships(self) -> AsyncIterator[list[tuple[str, str, str]]]:
        yield [("scope-a", "item-1", "c1")]

    async def live_cluster_summaries(self) -> list[tuple[str, str]]:
        return []


class FakeProducer:
    def __init__(self, fail_flushes: int = 0) -> None:
        self.queued: list[tuple[str, bytes | None]] = []
        self.delivered: list[tuple[str, bytes | None]] = []
        self.fail_flushes = fail_flushes

    def produce(
        self, topic: str, value: bytes | None, key: Any = None, headers: Any = None
    ) -> None:
        self.queued.append((topic, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        if self.fail_flushes:
            self.fail_flushes -= 1
            left, self.queued = len(self.queued), []  # the broker never acknowledged them
            return left
        self.delivered += self.queued
        self.queued = []
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.positions: dict[int, int] = {}
        self.seeks: list[tuple[int, int]] = []
        self.committed: list[tuple[int, int]] = []

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
                for tp in tps]  # fmt: skip

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.committed += [(tp.partition, tp.offset) for tp in offsets]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))


class FakeCache:
    needs_rebuild = False

    def apply(self, *args: Any) -> bool:
        return True


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _protocol(
    loop: asyncio.AbstractEventLoop,
    store: FakeStore,
    producer: FakeProducer | None = None,
    cache: Any = None,
) -> tuple[BatchProtocol, FakeProducer, FakeConsumer]:
    producer = producer or FakeProducer()
    consumer = FakeConsumer()
    proto = BatchProtocol(
        "g", TOPIC, EngineConfig(), cast(Any, store), cast(Any, cache or FakeCache()),
        cast(Any, consumer), cast(Any, producer), loop, Health(), lambda: _ready(store),
    )  # fmt: skip
    return proto, producer, consumer


async def _ready(store: FakeStore) -> Any:
    """The committer thread's store: the fake serves any event loop."""
    return store


def _msgs(partition: int, offsets: range) -> dict[int, list[Any]]:
    return {partition: [Msg(partition, o) for o in offsets]}


def _batch(
    proto: BatchProtocol, next_offset: int, eid: str, partition: int = 0
) -> tuple[BatchWrite, Pending]:
    """What the worker hands the protocol for fresh records of a partition up to
    `next_offset`: a membership, a change event in the outbox, their messages."""
    write = BatchWrite("g", items=[ROW], outbox=[(eid, "changes", b"c1", b"{}", "[]")])
    write.offsets.append(proto.offset_row(partition, next_offset))
    pending = Pending(
        out=[("assignments", b"item-1", b"{}", None), ("changes", b"c1", b"{}", None)],
        outbox_ids=[eid],
        next_offsets={partition: next_offset},
    )
    return write, pending


def _sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def test_producer_flush_fails_after_commit_outputs_are_republished_on_restart(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The batch is committed, its messages are not delivered: the process stops (raise).
    On restart the replayed records are not written again (below the stored offset) but
    their outputs are published again (not below the published offset), and the outbox
    rows are relayed and then marked sent."""
    store = FakeStore()
    store.offsets[0] = (10, 10)
    proto, _, _ = _protocol(loop, store, FakeProducer(fail_flushes=1))
    assert proto.take_over(0) == 0
    good, _ = proto.admit(_msgs(0, range(10, 13)))
    assert [m.offset() for m in good[0]] == [10, 11, 12]
    write, pending = _batch(proto, 13, "e1")
    assert proto.commit(write, [0])
    with pytest.raises(RuntimeError, match="not delivered"):
        proto.publish(pending)
    assert proto.sent_ids == []  # never marked sent: nothing was delivered
    assert store.offsets[0] == (13, 10)  # effects stored, outputs not published

    restarted, producer2, _ = _protocol(loop, store)
    assert restarted.take_over(0) == 0
    off = restarted.runs[0].offsets
    assert (off.stored, off.processed, off.published) == (13, 13, 10)
    attempts = dict(store.attempts)
    good, poison = restarted.admit(_msgs(0, range(0, 13)))
    assert len(good[0]) == 13 and not poison
    assert store.attempts == attempts  # a replay is not an attempt of the crash-loop guard
    assert all(off.replayed(o) for o in range(13))  # nothing is written twice
    assert [o for o in range(13) if off.unpublished(o)] == [10, 11, 12]  # republished
    assert restarted.relay_outbox() == 1
    assert producer2.delivered == [("changes", b"{}")]
    assert store.sent == {"e1"}
    assert store.commits == 1


def test_outbox_relay_fails_rows_stay_unsent_and_go_out_next_time(
    loop: asyncio.AbstractEventLoop,
) -> None:
    store = FakeStore()
    store.outbox = {
        e: {"event_id": e, "topic": "changes", "key": b"k", "payload": b"{}", "headers": "[]"}
        for e in ("e1", "e2")
    }
    proto, producer, _ = _protocol(loop, store, FakeProducer(fail_flushes=1))
    with pytest.raises(RuntimeError, match="outbox relay"):
        proto.relay_outbox()
    assert store.sent == set() and store.mark_sent_calls == 0
    assert proto.relay_outbox() == 2
    assert producer.delivered == [("changes", b"{}"), ("changes", b"{}")]
    assert store.sent == {"e1", "e2"}
    assert proto.relay_outbox() == 0


def test_a_fenced_commit_drops_the_batch_and_reloads_its_partitions(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A rival committed partition 0 after this worker loaded it: nothing of this batch is
    written or published, the partition reloads from PostgreSQL and is read again from its
    checkpoint, and the fenced batch's attempt is taken back from the crash-loop guard."""
    store = FakeStore()
    store.offsets[0] = (10, 10)
    proto, producer, consumer = _protocol(loop, store)
    proto.take_over(0)
    proto.sent_ids = ["e0"]  # published by the previous batch, to be marked with this one
    proto.admit(_msgs(0, range(10, 13)))
    rival = BatchWrite("g", offsets=[OffsetRow(TOPIC, 0, 20, 15, 10)])
    loop.run_until_complete(store.commit(rival))
    fenced = _sample("clusterer_fenced_batches_total")

    write, _ = _batch(proto, 13, "e1")
    assert not proto.commit(write, [0])
    assert _sample("clusterer_fenced_batches_total") == fenced + 1
    assert store.items == [] and store.outbox == {} and store.offsets[0] == (20, 15)
    assert producer.delivered == [] and proto.sent_ids == ["e0"]  # still to be marked
    off = proto.runs[0].offsets
    assert (off.stored, off.processed, off.published) == (20, 20, 15)
    assert consumer.seeks == [(0, 0)]
    assert store.attempts[(TOPIC, 0, 10)] == 0  # the fenced batch's attempt, taken back
    good, _ = proto.admit(_msgs(0, range(20, 22)))  # the first fresh records after it
    assert len(good[0]) == 2
    assert store.attempts[(TOPIC, 0, 20)] == 1  # a first attempt, not a crash loop
    proto.admit(_msgs(0, range(22, 23)))
    assert store.attempts[(TOPIC, 0, 22)] == 1  # later batches count again
    write, _ = _batch(proto, 23, "e2")
    assert proto.commit(write, [0])
    assert store.offsets[0] == (23, 15) and store.sent == {"e0"}


def test_postgres_lost_mid_commit_is_retried_and_not_a_crash_loop_attempt(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The transaction dies with the connection: the same batch is committed again on a
    fresh pool, once, without the process restarting (which the crash-loop guard would
    count as a failed attempt at these records)."""
    store = FakeStore()
    proto, _, _ = _protocol(loop, store)
    proto.take_over(0)
    proto.admit(_msgs(0, range(0, 5)))
    retries = _sample("clusterer_postgres_retries_total")
    store.fail_commits = [ConnectionResetError("connection lost mid-commit")]
    write, pending = _batch(proto, 5, "e1")
    assert proto.commit(write, [0])
    assert _sample("clusterer_postgres_retries_total") == retries + 1
    assert store.pool.expired == 1  # no pooled connection trusted after the failure
    assert store.commits == 1 and store.items == [ROW] and store.offsets[0] == (5, 0)
    assert proto.runs[0].offsets.stored == 5 and proto.postgres_ok
    assert store.attempts == {(TOPIC, 0, 0): 1}
    proto.publish(pending)
    proto.after_publish(pending)
    assert proto.runs[0].offsets.published == 5


class _RedisBack:
    """Redis answering again, as much of the client as a rebuild uses."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[Any, Any]] = {}

    def ping(self) -> bool:
        return True

    def scan_iter(self, match: str) -> list[str]:
        return []

    def pipeline(self, transaction: bool) -> _RedisBack:
        return self

    def hset(self, key: str, mapping: dict[Any, Any]) -> None:
        self.hashes.setdefault(key, {}).update(mapping)

    def execute(self) -> None:
        return None


def test_redis_lost_clustering_continues_and_the_cache_is_rebuilt_later(
    loop: asyncio.AbstractEventLoop,
) -> None:
    store = FakeStore()
    cache = Cache("redis://127.0.0.1:1/0", "t", retry_seconds=0.0)  # nothing listens there
    cache.needs_rebuild = False
    proto, producer, _ = _protocol(loop, store, cache=cache)
    proto.take_over(0)
    write, pending = _batch(proto, 5, "e1")
    pending.cache_set = [("scope-a", "item-1", "c1")]
    assert proto.commit(write, [0])
    proto.publish(pending)
    proto.after_publish(pending)
    proto.refresh_cache(pending)  # does not raise
    assert cache.needs_rebuild and _sample("clusterer_redis_degraded") == 1
    write, pending = _batch(proto, 9, "e2")  # the next batch goes through all the same
    assert proto.commit(write, [0])
    proto.publish(pending)
    proto.refresh_cache(pending)
    assert store.offsets[0] == (9, 5) and len(producer.delivered) == 4

    proto.rebuild_cache_if_due()  # still unreachable: nothing rebuilt, nothing raised
    assert cache.needs_rebuild
    back = _RedisBack()
    cache.client = cast(Any, back)
    proto.rebuild_cache_if_due()
    assert not cache.needs_rebuild and _sample("clusterer_redis_degraded") == 0
    assert back.hashes == {"t:items:scope-a": {"item-1": "c1"}}


def test_a_checkpoint_is_stored_only_once_its_batch_is_published(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A restart resumes from the stored checkpoint and republishes only what lies above
    it: a checkpoint stored with a batch whose outputs were then lost would lose them for
    good. So it waits for the first commit after its batch is published."""
    store = FakeStore()
    proto, _, _ = _protocol(loop, store)
    proto.take_over(0)
    run = proto.runs[0]
    run.held_checkpoint = (13, b"state")  # taken right after the batch ending at 13
    assert proto.due_checkpoints(0) == []  # not published yet: kept back
    assert run.held_checkpoint is not None
    run.offsets.published = 13  # the batch is out
    assert proto.due_checkpoints(0) == [(TOPIC, 0, 13, b"state")]
    assert run.held_checkpoint is None and proto.due_checkpoints(0) == []


def test_batches_in_flight_commit_in_order_each_fenced_on_the_previous_one(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The next batch is built while the previous one commits in the committer thread: its
    fence must expect the offset that commit stores (taken at submit, not when the batch
    was built), and it carries the outbox rows the previous one published."""
    store = FakeStore()
    proto, producer, _ = _protocol(loop, store)
    proto.take_over(0)
    write, pending = _batch(proto, 5, "e1")
    assert proto.submit(write, pending, [0])
    write, pending = _batch(proto, 9, "e2")  # built while the first may be in flight
    assert proto.submit(write, pending, [0])
    assert proto.collect()
    proto.close()
    assert store.commits == 2 and store.items == [ROW, ROW]
    assert store.offsets[0] == (9, 5)  # the second commit knew the first was published
    assert store.sent == {"e1"} and proto.sent_ids == ["e2"]
    assert len(producer.delivered) == 4
    off = proto.runs[0].offsets
    assert (off.stored, off.processed, off.published) == (9, 9, 9)


def test_a_fenced_batch_in_flight_drops_the_batch_built_on_top_of_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The batch in flight (partition 0) is fenced; the next one (partition 1) ran the
    engine after it, so its state includes the dropped batch's effects on the shared
    loop: neither is written or published, and both partitions reload."""
    store = FakeStore()
    store.offsets[0] = (10, 10)
    store.offsets[1] = (10, 10)
    proto, producer, consumer = _protocol(loop, store)
    proto.take_over(0)
    proto.take_over(1)
    loop.run_until_complete(
        store.commit(BatchWrite("g", offsets=[OffsetRow(TOPIC, 0, 20, 15, 10)]))
    )
    fenced = _sample("clusterer_fenced_batches_total")
    write, pending = _batch(proto, 13, "e1", partition=0)
    assert proto.submit(write, pending, [0])
    write, pending = _batch(proto, 12, "e2", partition=1)
    assert not proto.submit(write, pending, [1])
    proto.close()
    assert _sample("clusterer_fenced_batches_total") == fenced + 1
    assert store.items == [] and store.outbox == {} and producer.delivered == []
    assert store.offsets == {0: (20, 15), 1: (10, 10)}
    assert sorted(consumer.seeks) == [(0, 0), (1, 0)]
    assert proto.runs[1].offsets.processed == 10  # read again, not skipped as processed
    assert proto.in_flight is None


def test_a_publish_failing_in_flight_is_raised_by_the_next_collect(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The committer thread cannot deliver the batch it committed: the loop's next collect
    raises, so the process restarts and republishes (nothing marked sent or published)."""
    store = FakeStore()
    proto, _, consumer = _protocol(loop, store, FakeProducer(fail_flushes=1))
    proto.take_over(0)
    write, pending = _batch(proto, 5, "e1")
    assert proto.submit(write, pending, [0])
    with pytest.raises(RuntimeError, match="not delivered"):
        proto.collect()
    proto.close()
    assert store.offsets[0] == (5, 0) and proto.sent_ids == []
    assert proto.runs[0].offsets.published == 0 and consumer.committed == []


def test_an_isolated_record_is_attempted_only_once_the_one_before_it_committed(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Isolation processes a suspect range one record per commit (crash-loop guard step 2).
    Were the next record attempted while the previous one's commit is in flight, a crash on
    it would lose that commit: the restart reads the range from the earlier record again and
    its attempt count starts over (a poison record then crashed the process 9 times
    instead of 3, under CPU load)."""
    store = FakeStore()
    store.attempts[(TOPIC, 0, 0)] = 1  # a process died on the batch starting at 0
    proto, _, consumer = _protocol(loop, store)
    proto.take_over(0)
    keep, _ = proto.admit(_msgs(0, range(5)))
    assert [m.offset() for m in keep[0]] == [0] and consumer.seeks == [(0, 1)]
    write, pending = _batch(proto, 1, "e1")
    assert proto.submit(write, pending, [0])
    seen: list[tuple[bool, int]] = []
    record = store.record_attempts

    async def spy(
        group: str, spans: list[tuple[str, int, int, int]]
    ) -> dict[tuple[str, int], tuple[int, int]]:
        seen.append((proto.in_flight is None, store.commits))
        return await record(group, spans)

    store.record_attempts = spy  # type: ignore[method-assign]
    keep, _ = proto.admit(_msgs(0, range(1, 5)))
    assert [m.offset() for m in keep[0]] == [1]
    assert seen == [(True, 1)]  # record 0 committed before record 1's attempt
    assert store.offsets[0][0] == 1
    proto.close()
