"""The crash-loop guard's decisions, path by path (the attempts store is a dict here with the
semantics of state.db.Store.record_attempts and withdraw_attempts, tested against PostgreSQL
in tests/state)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.crash_loop import POISON_AT, CrashLoopGuard, Span

T = "in"


@dataclass
class Msg:
    off: int
    part: int = 0

    def topic(self) -> str:
        return T

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.off


class Attempts:
    """input_attempts in memory: survives a 'restart' (a new guard) like the table does."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], tuple[int, int, int]] = {}
        self.calls = 0

    def record(self, spans: list[Span]) -> dict[tuple[str, int], tuple[int, int]]:
        self.calls += 1
        out = {}
        for s in spans:
            tp = (s.topic, s.partition)
            first, n, until = self.rows.get(tp, (-1, 0, -1))
            n = n + 1 if first == s.first else 1
            until = max(until, s.last)
            self.rows[tp] = (s.first, n, until)
            out[tp] = (n, until)
        return out

    def withdraw(self, spans: list[Span]) -> None:
        for s in spans:
            tp = (s.topic, s.partition)
            first, n, until = self.rows[tp]
            if first == s.first and n > 0:
                self.rows[tp] = (first, n - 1, until)


def batch(first: int, n: int, part: int = 0) -> list[Msg]:
    return [Msg(o, part) for o in range(first, first + n)]


def test_a_healthy_stream_keeps_every_record_and_records_one_attempt_per_batch() -> None:
    db = Attempts()
    g = CrashLoopGuard(db)
    a = g.admit(batch(0, 10) + batch(0, 5, part=1))
    assert [m.off for m in a.keep] == list(range(10)) + list(range(5))
    assert not a.poison and not a.rewind
    assert db.calls == 1 and g.isolated() == set()


def test_a_second_attempt_at_the_same_offset_isolates_the_failed_range() -> None:
    db = Attempts()
    CrashLoopGuard(db).admit(batch(100, 50))  # then the process died
    g = CrashLoopGuard(db)  # the restart
    a = g.admit(batch(100, 50))
    assert [m.off for m in a.keep] == [100] and not a.poison
    assert [(tp.partition, tp.offset) for tp in a.rewind] == [(0, 101)]
    assert g.isolated() == {(T, 0)}
    # one record per batch up to the end of the failed range, then whole batches again
    for o in range(101, 150):
        assert [m.off for m in g.admit(batch(o, 50)).keep] == [o]
    assert [m.off for m in g.admit(batch(150, 20)).keep] == list(range(150, 170))
    assert g.isolated() == set()


def test_the_third_attempt_at_a_record_dead_letters_it_and_the_rest_goes_on() -> None:
    """Poison in the middle of a batch: three crashes in all, every other record passes."""
    db = Attempts()
    poison, crashes, processed, dead = 137, 0, [], []
    pos = 100
    g = CrashLoopGuard(db)
    while pos < 200:
        a = g.admit(batch(pos, min(50, 200 - pos)))
        dead += [m.off for m in a.poison]
        done = []
        for m in a.keep:
            if m.off == poison:
                break
            done.append(m.off)
        else:
            processed += done
            pos = max([m.off for m in a.keep + a.poison]) + 1
            continue
        crashes += 1  # died mid-batch: nothing of it committed; restart from `pos`
        g = CrashLoopGuard(db)
        assert crashes <= POISON_AT
    assert dead == [poison]
    assert crashes == POISON_AT
    assert processed == [o for o in range(100, 200) if o != poison]


def test_a_handled_failure_is_excused_and_not_counted() -> None:
    db = Attempts()
    g = CrashLoopGuard(db)
    g.admit(batch(0, 10))
    g.excuse([(T, 0)])  # e.g. a fenced commit: the batch is read again
    a = g.admit(batch(0, 10))
    assert len(a.keep) == 10 and db.rows[(T, 0)][1] == 1
    a = g.admit(batch(0, 10))  # not excused any more: a real second attempt
    assert [m.off for m in a.keep] == [0]


def test_an_excuse_waits_for_its_partition() -> None:
    db = Attempts()
    g = CrashLoopGuard(db)
    g.admit(batch(0, 10))
    g.excuse([(T, 0)])
    g.admit(batch(0, 3, part=1))  # a batch without partition 0 keeps the excuse
    assert len(g.admit(batch(0, 10)).keep) == 10


def test_an_excuse_holds_for_the_partitions_next_owner() -> None:
    """A rebalance fails the transaction in flight (ILLEGAL_GENERATION) and moves the
    partition: the process that handled the failure takes its attempt back, so the new
    owner reads the batch whole instead of isolating it one record per transaction."""
    db = Attempts()
    old = CrashLoopGuard(db)
    old.admit(batch(0, 2000))
    old.excuse([(T, 0)])  # the aborted transaction
    old.forget(T, 0)  # then the revocation
    a = CrashLoopGuard(db).admit(batch(0, 2000))
    assert len(a.keep) == 2000 and not a.rewind


def test_a_revoked_partition_forgets_its_isolation() -> None:
    db = Attempts()
    CrashLoopGuard(db).admit(batch(0, 10))
    g = CrashLoopGuard(db)
    g.admit(batch(0, 10))
    assert g.isolated() == {(T, 0)}
    g.forget(T, 0)
    assert g.isolated() == set()
