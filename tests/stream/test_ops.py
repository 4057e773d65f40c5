"""`clusterer produce` at a rate (the load generator of the latency benchmark), with the
producer replaced by a fake that records when each message left."""

from __future__ import annotations

import itertools
import time
from typing import Any, ClassVar

import pytest

from stream import ops
from stream.settings import Settings


class TimedProducer:
    sent: ClassVar[list[float]] = []
    values: ClassVar[list[tuple[bytes, bytes]]] = []
    connected: ClassVar[float] = 0.0
    CONNECTING = 0.1  # seconds until the broker answers: what a fresh client waits for

    def __init__(self, conf: dict[str, Any]) -> None:
        TimedProducer.sent = []
        TimedProducer.values = []
        TimedProducer.connected = 0.0

    def list_topics(self, topic: str, timeout: float) -> None:
        time.sleep(self.CONNECTING)  # the fake's connection time, not a wait on a race
        TimedProducer.connected = time.monotonic()

    def produce(self, topic: str, value: bytes, **kw: Any) -> None:
        TimedProducer.sent.append(time.monotonic())
        TimedProducer.values.append((value, kw["key"]))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_a_rate_is_kept_in_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    """No message leaves more than one pacing step ahead of its schedule, and the messages
    leave in bursts (a sleep per message cost more CPU than the message)."""
    monkeypatch.setattr(ops, "Producer", TimedProducer)
    rate, count = 2000.0, 400
    t0 = time.monotonic()
    assert ops.produce_synthetic(Settings(), count, 8, rate=rate, documents=False) == count
    sent = TimedProducer.sent
    assert len(sent) == count
    early = max((i + 1) / rate - (t - t0) for i, t in enumerate(sent))
    assert early <= ops._PACE_SECONDS + 0.002  # 2 ms: the clock read before t0
    gaps = sorted(b - a for a, b in itertools.pairwise(sent))
    # most messages leave right after another: paced one by one, the median gap would be the
    # schedule's 1 / rate; in bursts it is one message's cost (20-75 us on the dev machine,
    # which varies by more than 2x from day to day), so half the schedule's gap tells them apart
    assert gaps[len(gaps) // 2] < 0.5 / rate


def test_the_schedule_starts_once_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages produced while the client still connects are stamped but wait: the schedule
    starts after the broker's first answer, so no burst makes up for the connection."""
    monkeypatch.setattr(ops, "Producer", TimedProducer)
    rate, count = 2000.0, 400
    assert ops.produce_synthetic(Settings(), count, 8, rate=rate, documents=False) == count
    t0, sent = TimedProducer.connected, TimedProducer.sent
    assert t0 and sent[0] >= t0
    early = max((i + 1) / rate - (t - t0) for i, t in enumerate(sent))
    assert early <= ops._PACE_SECONDS + 0.002


def test_prebuilt_messages_are_built_before_the_first_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `prebuild` no message is built once sending has started, and the messages and
    their keys are the same as built on the way."""
    monkeypatch.setattr(ops, "Producer", TimedProducer)
    count = 50
    ops.produce_synthetic(Settings(), count, 8, documents=False)
    on_the_way = TimedProducer.values
    built: list[float] = []
    make = ops.synthetic.vector_event

    def timed(*args: Any, **kw: Any) -> bytes:
        built.append(time.monotonic())
        return make(*args, **kw)

    monkeypatch.setattr(ops.synthetic, "vector_event", timed)
    ops.produce_synthetic(Settings(), count, 8, documents=False, prebuild=True)
    assert len(built) == count
    assert max(built) < TimedProducer.sent[0]
    assert TimedProducer.values == on_the_way
