"""No message can stop the stream, against the real broker, database and cache: the
catalogue of malformed messages, and records that crash the process."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from stream import synthetic
from tests.conftest import wait_until
from tests.stream.conftest import Env, WorkerProcess

DIM = 16


def good_events(env: Env, n: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    model = f"{env.settings.prefix}-m"
    return [
        (item.item_id.encode(), synthetic.vector_event(item, model))
        for item in synthetic.stories(n, DIM, n_stories=6, alive=3, seed=seed)
    ]


def catalogue(env: Env) -> list[tuple[str, bytes | None, bytes | None]]:
    """(expected reason, key, value): the issue's 22 malformed messages."""
    base = json.loads(good_events(env, 1, seed=99)[0][1])

    def ev(**changes: Any) -> bytes:
        return json.dumps({**base, **changes}).encode()

    missing = dict(base)
    del missing["item_id"]
    deep = b'{"item_id":"deep","metadata":' + b'{"a":' * 20_000 + b"1" + b"}" * 20_001
    three = base64.b64encode(b"abc").decode()
    return [
        ("not_json", b"k-not-json", b"{not json"),
        ("not_json", b"k-truncated", ev()[:40]),
        ("schema_violation", b"k-array", b"[1, 2, 3]"),
        ("schema_violation", b"k-string", b'"a string"'),
        ("not_json", b"k-non-utf8", b"\xff\xfe\xfa\x00"),
        ("schema_violation", b"k-missing-id", json.dumps(missing).encode()),
        ("schema_violation", b"k-type", ev(item_id="x-type", embedding_type="image")),
        ("non_finite", b"k-nan", ev(item_id="x-nan", vector=[float("nan")] * DIM)),
        ("non_finite", b"k-inf", ev(item_id="x-inf", vector=[float("inf")] * DIM)),
        ("zero_vector", b"k-zero", ev(item_id="x-zero", vector=[0.0] * DIM)),
        ("schema_violation", b"k-strings", ev(item_id="x-str", vector=["0.5"] * DIM)),
        ("schema_violation", b"k-bools", ev(item_id="x-bool", vector=[True, False] * 8)),
        ("empty_vector", b"k-empty", ev(item_id="x-empty", vector=[])),
        ("bad_vector_encoding", b"k-b64", ev(item_id="x-b64", vector="!!not base64")),
        ("bad_vector_encoding", b"k-b64-odd", ev(item_id="x-b64-odd", vector=three)),
        ("dimension_mismatch", b"k-dim", ev(item_id="x-dim", vector=[0.25] * 8)),
        ("dimension_too_large", b"k-huge", ev(item_id="x-huge", vector=[0.1] * 100_000)),
        ("schema_violation", b"k-time", ev(item_id="x-time", event_time="yesterday")),
        ("oversize", b"k-oversize", b'{"x":"' + b"a" * 999_993 + b'"}'),
        ("too_deep", b"k-deep", deep),
        ("schema_violation", b"k-long-id", ev(item_id="i" * 5000)),
        ("missing_id", None, None),
    ]


def offsets_on_partition_0(env: Env) -> list[Any]:
    """The input messages as the broker holds them (to check each dead letter's origin)."""
    return [m for m in env.consume_all(env.settings.input_topics[0], 1) if m.partition() == 0]


def test_every_malformed_message_is_dead_lettered_with_its_origin_and_the_rest_flows(
    env: Env,
) -> None:
    good = good_events(env, 300)
    bad = catalogue(env)
    assert len(bad) == 22
    msgs: list[tuple[bytes | None, bytes | None]] = list(good[:50])
    for i, (_, key, value) in enumerate(bad):  # the bad ones between good ones, in batches
        msgs.append((key, value))
        msgs.extend(good[50 + 11 * i : 50 + 11 * (i + 1)])
    msgs.extend(good[50 + 11 * len(bad) :])
    env.produce(msgs, partition=0)
    w = env.start_worker()
    members = wait_until(
        lambda: m if len(m := env.memberships()) >= 300 else None, 120, "300 memberships"
    )
    assert set(members) == {k.decode() for k, _ in good}
    dead = env.consume_all(env.settings.dlq_topic, len(bad))
    assert len(dead) == len(bad)
    sent = {int(m.offset()): m for m in env.consume_all(env.settings.input_topics[0], len(msgs))}
    by_key = {m.key(): m for m in dead}
    for expected, key, value in bad:
        d = by_key[key]
        h = {k: v.decode() for k, v in d.headers()}
        assert h["reason"] == expected, (key, h)
        assert {"detail", "error_class", "stage", "source_topic", "source_partition"} <= set(h)
        assert h["source_topic"] == env.settings.input_topics[0] and h["source_partition"] == "0"
        origin = sent[int(h["source_offset"])]
        assert origin.key() == key and origin.value() == value
        if expected == "dimension_mismatch":  # decided by the worker, after routing
            assert h["stage"] == "worker"
            assert json.loads(d.value())["item_id"] == "x-dim"
        else:
            assert h["stage"] == "router" and d.value() == (value or b"")
    assert w.proc.poll() is None and w.http("/healthz")[0] == 200
    assert w.http("/readyz")[0] == 200


def keep_alive(env: Env, procs: list[WorkerProcess]) -> int:
    """Restart the (crashing) worker whenever it died, as Kubernetes would; returns the
    number of restarts so far."""
    if procs[-1].proc.poll() is not None:
        assert procs[-1].proc.returncode == 7, procs[-1].log.read_text()[-2000:]
        procs.append(env.start_worker(module="tests.stream.crashing_worker"))
    return len(procs) - 1


def crash_story(procs: list[WorkerProcess]) -> str:
    """What each (re)started process logged about attempts, failed transactions and dead
    letters: what a failed restart bound needs to be read."""
    words = ("attempt", "transaction failed", "dead letter", "fenced", "rebalance")
    return "\n".join(
        f"[{i}] {line}"
        for i, p in enumerate(procs)
        for line in p.log.read_text(errors="replace").splitlines()
        if any(w in line for w in words)
    )


def test_records_that_crash_the_process_are_dead_lettered_as_poison_on_the_third_attempt(
    env: Env,
) -> None:
    """One input message crashes the router, one routed event crashes the clustering
    worker. Each costs at most three crashes, then goes to the DLQ with reason `poison`;
    the good messages around them (in the same batches) are all clustered."""
    good = good_events(env, 200, seed=4)
    base = json.loads(good[0][1])
    router_poison = json.dumps({**base, "item_id": "crash-router"}).encode()
    worker_poison = json.dumps({**base, "item_id": "crash-worker"}).encode()
    msgs = [*good[:60], (b"kr", router_poison), *good[60:120], (b"kw", worker_poison)]
    env.produce(msgs + good[120:], partition=0)
    procs = [env.start_worker(module="tests.stream.crashing_worker")]

    def all_good_clustered() -> dict[str, str] | None:
        keep_alive(env, procs)
        m = env.memberships()
        return m if len(m) >= 200 else None

    members = wait_until(all_good_clustered, 300, "the good events clustered", 0.5)
    assert set(members) == {k.decode() for k, _ in good}
    assert "crash-router" not in members and "crash-worker" not in members
    dead = env.consume_all(env.settings.dlq_topic, 2)
    assert len(dead) == 2
    heads = {m.key(): {k: v.decode() for k, v in m.headers()} for m in dead}
    assert heads[b"kr"]["reason"] == heads[b"kw"]["reason"] == "poison"
    assert (heads[b"kr"]["stage"], heads[b"kw"]["stage"]) == ("router", "worker")
    assert int(heads[b"kr"]["source_offset"]) == 60
    assert int(heads[b"kw"]["source_offset"]) == 121
    restarts = keep_alive(env, procs)
    assert 2 <= restarts <= 6, crash_story(procs)  # at most three crashes per poison record
    assert procs[-1].proc.poll() is None
    # and the stream goes on after them
    env.produce(good_events(env, 20, seed=5), partition=0)
    wait_until(lambda: len(env.memberships()) >= 220, 60, "20 more clustered")
    assert np.all([p.proc.returncode in (None, 7) for p in procs])
