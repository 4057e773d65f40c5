"""The router's pipelined transaction commit, with the Kafka clients replaced by fakes (the
real broker runs the same path in test_service.py and test_poison.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors import EngineConfig
from stream import metrics, router, synthetic
from stream.crash_loop import CrashLoopGuard, Span
from stream.settings import Settings

WAIT = 10.0  # seconds: a bound for conditions, not a pause


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)

    def error(self) -> None:
        return None


class FakeConsumer:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.queue: list[FakeMessage] = []
        self.consumes = 0
        self.seeks: list[tuple[str, int, int]] = []
        self.closed = False

    def subscribe(self, topics: list[str], **kw: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        self.consumes += 1
        out, self.queue = self.queue[:n], self.queue[n:]
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def consumer_group_metadata(self) -> object:
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Records the calls; `commit_transaction` blocks until `release` is set, then fails
    with `fail` if one is given."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.calls: list[str] = []
        self.produced: list[tuple[str, bytes]] = []
        self.release = threading.Event()
        self.committing = threading.Event()
        self.fail: KafkaException | None = None

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, value: bytes, **kw: Any) -> None:
        self.produced.append((topic, value))

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], *a: Any) -> None:
        self.calls.append("offsets " + ",".join(f"{o.partition}@{o.offset}" for o in offsets))

    def commit_transaction(self, timeout: float) -> None:
        self.committing.set()
        assert self.release.wait(WAIT)
        if self.fail is not None:
            raise self.fail
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


Fakes = tuple[router.Router, FakeProducer, FakeConsumer]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    monkeypatch.setattr(router, "Consumer", FakeConsumer)
    monkeypatch.setattr(router, "Producer", FakeProducer)
    r = router.Router(Settings(input_topics=("in",), prefix="t"), EngineConfig())
    producer, consumer = cast(FakeProducer, r.producer), cast(FakeConsumer, r.consumer)
    yield r, producer, consumer
    producer.release.set()
    r.close()


def events(consumer: FakeConsumer, partition: int, offsets: range) -> None:
    items = synthetic.stories(len(offsets), 8, seed=partition)
    for offset, item in zip(offsets, items, strict=True):
        consumer.queue.append(FakeMessage("in", partition, offset, synthetic.vector_event(item)))


def routed_total() -> float:
    """The router's consumed-messages counter (counts committed batches)."""
    for fam in metrics.REGISTRY.collect():
        if fam.name == "clusterer_events_consumed":
            for x in fam.samples:
                if x.name.endswith("_total") and x.labels.get("stage") == "router":
                    return x.value
    return 0.0


def test_nothing_is_taken_while_the_commit_runs(fakes: Fakes) -> None:
    """The next batch is consumed only once the previous commit has ended: a producer has
    one transaction at a time, and the loop meanwhile runs the clustering stage."""
    r, producer, consumer = fakes
    events(consumer, 0, range(0, 3))
    before = routed_total()
    assert r.poll(0.0) == 3
    assert producer.committing.wait(WAIT)
    events(consumer, 0, range(3, 5))
    consumes = consumer.consumes
    assert r.poll(0.0) == 0  # the commit still runs: nothing consumed, no new transaction
    assert consumer.consumes == consumes
    assert producer.calls == ["begin", "offsets 0@3"]
    assert routed_total() == before  # counted once committed
    producer.release.set()
    assert r.poll(WAIT) == 2
    assert routed_total() == before + 3
    assert producer.calls[:4] == ["begin", "offsets 0@3", "commit", "begin"]


def test_a_failed_commit_is_aborted_and_its_batch_read_again(fakes: Fakes) -> None:
    """The error surfaces when the commit is collected: the transaction is aborted and the
    consumer seeks back to the batch's first offset on every partition it read."""
    r, producer, consumer = fakes
    events(consumer, 0, range(10, 12))
    events(consumer, 3, range(40, 41))
    before = routed_total()
    producer.fail = KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out"))
    assert r.poll(0.0) == 3
    producer.release.set()
    assert r.collect(WAIT)
    assert producer.calls == ["begin", "offsets 0@12,3@41", "abort"]
    assert sorted(consumer.seeks) == [("in", 0, 10), ("in", 3, 40)]
    assert routed_total() == before
    assert r.committing is None


class RecordedAttempts:
    """The crash-loop guard's attempts store, recording what is withdrawn."""

    def __init__(self) -> None:
        self.withdrawn: list[list[Span]] = []

    def record(self, spans: list[Span]) -> dict[tuple[str, int], tuple[int, int]]:
        return {(s.topic, s.partition): (1, s.last) for s in spans}

    def withdraw(self, spans: list[Span]) -> None:
        self.withdrawn.append(spans)


def test_a_failed_commit_takes_back_its_attempts_in_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch's attempt on every partition it read is withdrawn, so that whoever reads it
    next (after the rebalance that failed it, maybe another process) does not isolate it."""
    monkeypatch.setattr(router, "Consumer", FakeConsumer)
    monkeypatch.setattr(router, "Producer", FakeProducer)
    attempts = RecordedAttempts()
    guard = CrashLoopGuard(attempts)
    r = router.Router(Settings(input_topics=("in",), prefix="t"), EngineConfig(), guard)
    producer, consumer = cast(FakeProducer, r.producer), cast(FakeConsumer, r.consumer)
    try:
        events(consumer, 0, range(10, 12))
        events(consumer, 3, range(40, 41))
        producer.fail = KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION, "rebalanced"))
        assert r.poll(0.0) == 3
        producer.release.set()
        assert r.collect(WAIT)
        (spans,) = attempts.withdrawn
        assert sorted((s.partition, s.first, s.last) for s in spans) == [(0, 10, 11), (3, 40, 40)]
    finally:
        producer.release.set()
        r.close()


def test_close_waits_for_the_commit(fakes: Fakes) -> None:
    """Leaving the group while a commit runs would hand over offsets that may still fail."""
    r, producer, consumer = fakes
    events(consumer, 1, range(0, 2))
    assert r.poll(0.0) == 2
    closing = threading.Thread(target=r.close)
    closing.start()
    assert producer.committing.wait(WAIT)
    assert not consumer.closed
    producer.release.set()
    closing.join(WAIT)
    assert consumer.closed
    assert producer.calls[-1] == "commit"
