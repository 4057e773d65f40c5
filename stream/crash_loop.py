"""Defence in depth against a record that kills the process that reads it.

Every failure that one message can cause while it is decoded is already caught and
dead-lettered. This guard is for the failures nobody foresaw (a bug in the engine that one
record triggers, a crash in a C extension): without it the process dies, restarts at the
same committed offset, reads the same record and dies again, for ever.

The protocol, per input partition, with the attempts kept where a restart sees them
(PostgreSQL, `input_attempts`, one row per partition):

1. Before a batch is processed, record an attempt at the batch's first offset of each of its
   partitions (one statement for the whole batch). The row also keeps the highest offset
   ever attempted (`suspect_until`).
2. A count of 2 at the first offset means the previous attempt starting there never
   finished: the partition is *isolated* up to `suspect_until`, i.e. processed one record
   per batch, each committed on its own, each attempt recorded. Good records pass; the bad
   one is the first record of a batch when the process dies again.
3. A count of 3 (`POISON_AT`) at a record's offset: it failed twice. It is dead-lettered
   with reason `poison` and skipped; the rest of the suspect range stays isolated.
4. A failure the process handled (an aborted transaction, a fenced commit) takes its
   attempt back in PostgreSQL (`excuse`): whoever reads those records next, this process or
   the one the partition moved to in the rebalance that failed the transaction, counts a
   first attempt. (Counted, it isolated a whole batch of up to 2,000 records one per
   transaction, ~70 records/s, in the new owner: docs/benchmarks.md, scale-out.)

Normal operation costs one small write per batch (no fsync: a lost count only means one
more attempt). A deliberate `kill -9` at the same offset twice counts the same as a crash;
a third one there dead-letters a good record, which stays in the DLQ to be replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import TopicPartition

from state.db import Store

POISON_AT = 3
TP = tuple[str, int]

log = logging.getLogger(__name__)


class Record(Protocol):
    """What the guard reads of a consumed message (confluent_kafka.Message has it)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


M = TypeVar("M", bound=Record)


@dataclass(frozen=True)
class Span:
    """The offsets of one partition that a batch is about to process."""

    topic: str
    partition: int
    first: int
    last: int


class Attempts(Protocol):
    """Where the attempts are kept (PostgreSQL's `input_attempts` in the service)."""

    def record(self, spans: list[Span]) -> dict[TP, tuple[int, int]]:
        """One attempt per span; returns (attempts at span.first, suspect_until) per
        (topic, partition)."""
        ...

    def withdraw(self, spans: list[Span]) -> None:
        """Take back the attempt of each span, if it is still its partition's."""
        ...


@dataclass(frozen=True)
class StoredAttempts:
    """Attempts of `group` in PostgreSQL, each call made through `run` (the caller's
    retrying database call: a database outage delays the batch, it is not a failed attempt)."""

    store: Store
    group: str
    run: Callable[[Callable[[], Awaitable[Any]]], Any]

    def record(self, spans: list[Span]) -> dict[TP, tuple[int, int]]:
        rows = [(s.topic, s.partition, s.first, s.last) for s in spans]
        out: dict[TP, tuple[int, int]] = self.run(
            lambda: self.store.record_attempts(self.group, rows)
        )
        return out

    def withdraw(self, spans: list[Span]) -> None:
        rows = [(s.topic, s.partition, s.first) for s in spans]
        self.run(lambda: self.store.withdraw_attempts(self.group, rows))


@dataclass
class Admitted(Generic[M]):
    """What a batch may process, what it must dead-letter as poison, where to rewind."""

    keep: list[M] = field(default_factory=list)
    poison: list[M] = field(default_factory=list)
    rewind: list[TopicPartition] = field(default_factory=list)


class CrashLoopGuard:
    def __init__(self, attempts: Attempts) -> None:
        self._attempts = attempts
        self._until: dict[TP, int] = {}  # isolated partitions: up to this offset
        self._last: dict[TP, Span] = {}  # each partition's last recorded attempt

    def isolated(self) -> set[TP]:
        return set(self._until)

    def forget(self, topic: str, partition: int) -> None:
        """A revoked partition: its next owner reads the attempts from the database."""
        self._until.pop((topic, partition), None)
        self._last.pop((topic, partition), None)

    def excuse(self, tps: Iterable[TP]) -> None:
        """These partitions' records are read again after a failure the process handled (a
        failed transaction, a fenced commit): their last attempts are taken back (step 4),
        in one call."""
        spans = [span for tp in tps if (span := self._last.pop(tp, None)) is not None]
        if spans:
            self._attempts.withdraw(spans)

    def admit(self, msgs: list[M]) -> Admitted[M]:
        by_tp: dict[TP, list[M]] = {}
        for m in msgs:
            by_tp.setdefault((str(m.topic()), int(m.partition() or 0)), []).append(m)
        if not by_tp:
            return Admitted()
        take: dict[TP, list[M]] = {}
        for tp, ms in by_tp.items():
            take[tp] = ms[:1] if self._isolating(tp, ms[0]) else ms
        spans = [Span(t, p, _off(ms[0]), _off(ms[-1])) for (t, p), ms in take.items()]
        counts = self._attempts.record(spans)
        self._last.update(((s.topic, s.partition), s) for s in spans)
        out: Admitted[M] = Admitted()
        for tp, ms in by_tp.items():
            attempts, until = counts.get(tp, (1, -1))
            if attempts >= 2:
                # an operator reading a crash loop (and a test that counts restarts) needs
                # to see each decision: which offset, how many attempts, up to where
                msg = "%s[%d]@%d: attempt %d, records up to %d processed one at a time"
                log.warning(msg, *tp, _off(ms[0]), attempts, until)
                self._until[tp] = max(self._until.get(tp, -1), until)
            isolate = self._isolating(tp, ms[0])
            mine = ms[:1] if isolate else ms
            if isolate and len(ms) > 1:
                out.rewind.append(TopicPartition(tp[0], tp[1], _off(ms[1])))
            if attempts >= POISON_AT:
                out.poison.append(mine[0])
                mine = mine[1:]
            out.keep.extend(mine)
        return out

    def _isolating(self, tp: TP, first: Record) -> bool:
        until = self._until.get(tp)
        if until is None:
            return False
        if _off(first) > until:
            del self._until[tp]
            return False
        return True


def _off(m: Record) -> int:
    return int(m.offset() or 0)
