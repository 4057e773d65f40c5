"""The service against the real broker, database and cache (dev/services.sh)."""

from __future__ import annotations

import gc
import json
import re
import signal
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from processors import Batch, Engine, EngineConfig
from stream import records, synthetic
from stream.settings import Settings
from tests.conftest import ROOT, wait_until
from tests.stream.conftest import Env, WorkerProcess


def stream_messages(env: Env, n: int, models: int = 1, dim: int = 32, seed: int = 0) -> list:
    """n synthetic Stage 3 messages over `models` scopes, documents and per-vector events
    mixed; keys are document ids (arbitrary with respect to scopes)."""
    out = []
    for i, item in enumerate(synthetic.stories(n, dim, n_stories=6, alive=3, seed=seed)):
        model = f"{env.settings.prefix}-m{i % models}"
        make = synthetic.embedded_document if i % 2 else synthetic.vector_event
        out.append((item.document_id.encode(), make(item, model)))
    return out


def reference(env: Env, below: dict[int, int] | None = None) -> dict[str, str]:
    """What the service must hold: one engine per by-scope partition over that partition's
    records in order (the router's output), exactly as a worker runs them. `below`: only the
    records under these offsets (partition -> next offset; a partition left out: none), what
    PostgreSQL holds when its stored offsets are these."""
    per_part: dict[int, list] = defaultdict(list)
    for m in env.by_scope_records():
        p = int(m.partition())
        if below is None or int(m.offset()) < below.get(p, 0):
            per_part[p].append(records.decode(m.value()))
    out: dict[str, str] = {}
    for recs in per_part.values():
        eng = Engine(EngineConfig())
        for r in recs:
            if isinstance(r, records.Delete):
                eng.forget([r.item_id])
                continue
            key = eng.scope_key(r.embedding_type, r.embedding_model, r.metadata)
            eng.learn(
                Batch(
                    r.vector[None, :],
                    [r.item_id],
                    np.array([r.event_time]),
                    [r.document_id],
                    [r.metadata],
                    [key],
                )
            )
        for c in eng.results(include_candidates=True):
            out.update({item: c.cluster_id for item in c.member_ids})
    return out


def stored_offsets(env: Env) -> dict[int, int]:
    """By-scope partition -> the next offset PostgreSQL holds for this test's group."""
    rows = env.sql(
        "SELECT partition, next_offset FROM consumed_offsets WHERE consumer_group=$1"
        " AND topic=$2",
        env.settings.group_id,
        env.settings.by_scope_topic,
    )
    return {int(r["partition"]): int(r["next_offset"]) for r in rows}


TAKEOVER = re.compile(r"partition (\d+): checkpoint at \d+, stored offset (\d+)")


def takeovers(w: WorkerProcess) -> dict[int, int]:
    """Partition -> the stored offset at the worker's latest take-over of it (its log)."""
    return {int(p): int(off) for p, off in TAKEOVER.findall(w.log.read_text())}


def metric(w: WorkerProcess, name: str) -> float:
    """The value of an unlabelled counter or gauge on the worker's /metrics."""
    status, body = w.http("/metrics")
    assert status == 200, f"/metrics answered {status}"
    for line in body.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


def assert_outputs_published(env: Env, members: dict[str, str]) -> None:
    """Every committed item has its assignment message and every committed change event
    (outbox and cluster_events) is on the changes topic; duplicates allowed (consumers
    deduplicate by item id and event id), nothing published that was not committed."""
    assigned = env.consume_all(env.settings.assignments_topic, len(members))
    assert {m.key().decode() for m in assigned} == set(members)
    events = {
        r["event_id"]
        for r in env.sql(
            "SELECT event_id FROM outbox WHERE topic=$1", env.settings.changes_topic
        )
    }
    events |= {r["event_id"] for r in env.sql("SELECT event_id FROM cluster_events")}
    assert events
    changes = env.consume_all(env.settings.changes_topic, len(events))
    assert {json.loads(m.value())["event_id"] for m in changes} == events


def wait_all_committed(env: Env, n: int, timeout: float = 120.0) -> dict[str, str]:
    def done() -> dict[str, str] | None:
        m = env.memberships()
        return m if len(m) >= n else None

    return wait_until(done, timeout, f"{n} memberships in postgres", 0.5)


def test_end_to_end_every_event_assigned_once_and_seen_downstream(env: Env) -> None:
    n = 900
    msgs = stream_messages(env, n, models=2)
    env.produce(msgs)
    w = env.start_worker()
    members = wait_all_committed(env, n)
    assert len(members) == n
    assigned = env.consume_all(env.settings.assignments_topic, n)
    ids = [m.key().decode() for m in assigned]
    assert len(ids) == n and len(set(ids)) == n
    for m in assigned[:5]:
        a = json.loads(m.value())
        assert members[a["item_id"]].startswith(a["cluster_id"].rsplit("-", 1)[0])
    # downstream: change events keyed by cluster, and the latest state of each live cluster
    active = {
        r["id"]
        for r in env.sql(
            "SELECT id FROM clusters WHERE status='active' AND cluster_type LIKE $1",
            f"%{env.settings.prefix}%",
        )
    }
    assert active
    changes = env.consume_all(env.settings.changes_topic, len(active))
    kinds = {json.loads(m.value())["kind"] for m in changes}
    assert "created" in kinds
    for m in changes:
        assert m.key().decode() == json.loads(m.value())["cluster_id"]
    snaps = env.consume_all(env.settings.clusters_topic, len(active))
    latest = {}
    for m in snaps:
        latest[m.key().decode()] = m.value()
    assert active <= {k for k, v in latest.items() if v is not None}
    status, body = w.http("/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    status, body = w.http("/metrics")
    assert "clusterer_items_assigned_total" in body
    assert "document-" not in body  # no cluster ids as label values
    assert members == reference(env)


def test_service_and_replay_cli_give_the_same_clusters(env: Env, tmp_path) -> None:
    n = 600
    env.produce(stream_messages(env, n, models=1, seed=3))
    env.start_worker()
    members = wait_all_committed(env, n)
    recs = [
        r
        for m in env.by_scope_records()
        if isinstance(r := records.decode(m.value()), records.Routed)
    ]
    assert len(recs) == n
    np.save(tmp_path / "x.npy", np.vstack([r.vector for r in recs]))
    np.save(tmp_path / "t.npy", np.array([r.event_time for r in recs]))
    (tmp_path / "ids.txt").write_text("\n".join(r.item_id for r in recs) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "replay",
            "--vectors",
            str(tmp_path / "x.npy"),
            "--timestamps",
            str(tmp_path / "t.npy"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--model",
            recs[0].embedding_model,
            "--labels-out",
            str(tmp_path / "labels.npy"),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    labels = np.load(tmp_path / "labels.npy")
    replay_groups: dict[int, set[str]] = defaultdict(set)
    for r, lab in zip(recs, labels, strict=True):
        if lab >= 0:  # -1: the item ended in no real cluster (a candidate)
            replay_groups[int(lab)].add(r.item_id)
    active = {
        r["id"]
        for r in env.sql(
            "SELECT id FROM clusters WHERE status='active' AND cluster_type LIKE $1",
            f"%{env.settings.prefix}%",
        )
    }
    service_groups: dict[str, set[str]] = defaultdict(set)
    for item, cid in members.items():
        if cid in active:
            service_groups[cid].add(item)
    assert len(replay_groups) >= 3
    assert sorted(map(sorted, service_groups.values())) == sorted(
        map(sorted, replay_groups.values())
    )


def kill_mid_stream(env: Env, w: WorkerProcess, produced: int) -> dict[str, str]:
    """kill -9 the worker once it committed something, and prove the kill landed mid-stream:
    the process died of SIGKILL with part, not all, of what was produced committed. Returns
    the memberships PostgreSQL holds at the kill. (A kill inside a router transaction holds
    the by-scope topic back until the broker aborts it: transaction.timeout.ms, 60 s.)"""
    wait_until(lambda: len(env.memberships()) > 0, 120, "a first batch committed", 0.05)
    w.kill9()
    assert w.proc.returncode == -signal.SIGKILL
    at_kill = env.memberships()
    assert 0 < len(at_kill) < produced, f"{len(at_kill)} of {produced} committed at the kill"
    return at_kill


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(env: Env) -> None:
    n = 2400
    msgs = stream_messages(env, n, models=2, seed=5)
    env.produce(msgs[: n // 2])
    at_kill = kill_mid_stream(env, env.start_worker(), n // 2)
    env.produce(msgs[n // 2 :])  # the stream goes on while no worker runs
    second = env.start_worker()
    members = wait_all_committed(env, n, timeout=180)  # see kill_mid_stream
    assert len(members) == n
    # the restarted worker, the only one alive, committed the rest: its own counter says so
    assert metric(second, "clusterer_items_assigned_total") >= n - len(at_kill)
    ref = reference(env)
    assert members == ref
    sizes = env.sql(
        "SELECT c.id, c.size, count(i.id) AS rows FROM clusters c LEFT JOIN cluster_items i"
        " ON i.cluster_id = c.id WHERE c.cluster_type LIKE $1 AND c.status IN"
        " ('active', 'candidate') GROUP BY c.id, c.size",
        f"%{env.settings.prefix}%",
    )
    assert all(r["size"] == r["rows"] for r in sizes)
    ref_sizes: dict[str, int] = defaultdict(int)
    for cid in ref.values():
        ref_sizes[cid] += 1
    assert {r["id"]: r["size"] for r in sizes if r["size"]} == dict(ref_sizes)


def test_kill_9_then_the_output_topics_are_complete(env: Env) -> None:
    n = 3000  # long enough that the first stored checkpoint comes mid-stream
    env.produce(stream_messages(env, n, models=2, seed=7))
    w = env.start_worker()
    # the riskiest moment: right after a commit that also wrote an engine checkpoint, while
    # that batch's outputs are being published (a restart resumes from the checkpoint)
    wait_until(
        lambda: env.sql("SELECT 1 FROM engine_checkpoints"), 120, "a checkpoint committed", 0.02
    )
    kill_mid_stream(env, w, n)
    env.start_worker()
    members = wait_all_committed(env, n, timeout=180)  # see kill_mid_stream
    assert len(members) == n
    # what the killed worker committed but had not marked sent is relayed, then marked
    wait_until(
        lambda: not env.sql("SELECT 1 FROM outbox WHERE sent_at IS NULL"),
        60,
        "every outbox row sent",
    )
    assert_outputs_published(env, members)


def test_two_workers_rebalance_mid_stream_same_end_state(env: Env) -> None:
    n = 2400
    # many scopes, so that every by-scope partition (hence each worker) gets records
    msgs = stream_messages(env, n, models=24, seed=9)
    env.produce(msgs[: n // 2])
    env.start_worker()
    wait_until(lambda: len(env.memberships()) >= n // 8, 120, "some committed", 0.05)
    second = env.start_worker()
    # the rest arrives once the second worker holds partitions: it has work of its own
    wait_until(lambda: takeovers(second), 120, "the second worker's first assignment")
    env.produce(msgs[n // 2 :])
    members = wait_all_committed(env, n, timeout=180)
    assert members == reference(env)
    # the second worker committed records of the partitions it holds: only the holder
    # commits (a zombie's commit is fenced), so what PostgreSQL stored past the offset it took
    # a partition over at is its work
    status, body = second.http("/readyz")
    assert status == 200, body
    held = json.loads(body)["partitions"]
    took, stored = takeovers(second), stored_offsets(env)
    assert held and set(held) <= set(took)
    assert sum(stored[p] - took[p] for p in held) > 0, (held, took, stored)


def test_every_kind_of_bad_message_is_dead_lettered_and_the_stream_goes_on(env: Env) -> None:
    model = f"{env.settings.prefix}-m0"
    good = stream_messages(env, 50, models=1, dim=16)
    base = json.loads(synthetic.vector_event(next(synthetic.stories(1, 16)), model))

    def ev(**changes) -> bytes:
        return json.dumps({**base, **changes}).encode()

    bad = {
        "not_json": b"{not json",
        "schema_violation": ev(embedding_type="image"),
        "non_finite": ev(vector=[float("nan")] * 16),
        "zero_vector": ev(vector=[0.0] * 16),
        "oversize": b'{"x":"' + b"a" * 1_000_050 + b'"}',  # over the 1 MB limit, under Kafka's
        "dimension_mismatch": ev(item_id="wrong-dim", vector=[0.25] * 8),
    }
    msgs = good[:25] + [(b"bad", v) for v in bad.values()] + [(None, None)] + good[25:]
    env.produce(msgs)
    env.start_worker()
    wait_all_committed(env, 50)
    dead = env.consume_all(env.settings.dlq_topic, len(bad) + 1)
    reasons = {dict(m.headers())["reason"].decode() for m in dead}
    assert set(bad) | {"missing_id"} == reasons
    for m in dead:
        h = {k: v.decode() for k, v in m.headers()}
        assert {"detail", "source_topic", "source_partition", "source_offset"} <= set(h)
    by_reason = {dict(m.headers())["reason"].decode(): m for m in dead}
    for reason, original in bad.items():
        if reason == "dimension_mismatch":
            continue  # decided by the worker, after routing: checked below
        assert by_reason[reason].value() == original  # the original bytes, untouched
    # the worker dead-letters the routed per-vector event and names the input it came from
    wrong = by_reason["dimension_mismatch"]
    h = {k: v.decode() for k, v in wrong.headers()}
    assert h["source_topic"] == env.settings.input_topics[0]
    assert json.loads(wrong.value())["item_id"] == "wrong-dim"  # the event, as input JSON
    src = env.consume_all(h["source_topic"], 1)
    origin = [m for m in src if m.partition() == int(h["source_partition"])]
    assert any(
        m.offset() == int(h["source_offset"]) and m.value() == bad["dimension_mismatch"]
        for m in origin
    )
    assert "wrong-dim" not in env.memberships()


def test_forget_document_removes_its_items(env: Env) -> None:
    n = 300
    env.produce(stream_messages(env, n, models=1, seed=11))
    env.start_worker()
    members = wait_all_committed(env, n)
    victim_item = sorted(members)[7]
    doc = env.sql("SELECT document_id FROM cluster_items WHERE item_id=$1", victim_item)[0][0]
    out = env.cli("forget", "--document-id", doc)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: victim_item not in env.memberships(), 60, "the item removed")
    assert not env.sql("SELECT 1 FROM cluster_items WHERE document_id=$1", doc)


def test_lag_command_reports_every_partition(env: Env) -> None:
    env.produce(stream_messages(env, 100, models=1))
    env.start_worker()
    wait_all_committed(env, 100)

    def lag_zero() -> str | None:
        out = subprocess.run(
            [sys.executable, "-m", "stream.cli", "lag"],
            cwd=ROOT,
            env=env.env(),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        rows = [line.split() for line in out.splitlines()[1:]]
        by_scope = [r for r in rows if r[1] == env.settings.by_scope_topic and r[3] != "-"]
        return out if by_scope and all(r[5] == "0" for r in by_scope) else None

    out = wait_until(lag_zero, 60, "by-scope lag 0")
    assert len(out.splitlines()) == 1 + 2 * env.settings.partitions


def test_sigterm_finishes_the_batch_and_leaves_cleanly(env: Env) -> None:
    n = 3000
    env.produce(stream_messages(env, n, models=2, seed=19))
    w = env.start_worker()
    # a backlog the worker is busy with: batch after batch in flight
    wait_until(lambda: len(env.memberships()) > 0, 120, "a first batch committed", 0.05)
    assert w.terminate(timeout=60) == 0
    log = w.log.read_text()
    assert "signal 15: finishing the current batch" in log and "worker stopped" in log, log[-3000:]
    members = env.memberships()
    assert 0 < len(members) < n, f"{len(members)} of {n} committed: not stopped mid-stream"
    # nothing half-written: PostgreSQL holds exactly the state of the records below its
    # stored offsets, and what it committed was published before the process left
    assert members == reference(env, below=stored_offsets(env))
    assert_outputs_published(env, members)
    env.start_worker()
    members = wait_all_committed(env, n)
    assert members == reference(env)


def services_sh(*args: str) -> None:
    subprocess.run([str(ROOT / "dev" / "services.sh"), *args], check=True, timeout=300)


def test_postgres_restart_mid_stream_worker_retries_and_loses_nothing(env: Env) -> None:
    n = 2400
    msgs = stream_messages(env, n, models=2, seed=13)
    env.produce(msgs[: n // 2])
    w = env.start_worker()
    wait_until(lambda: len(env.memberships()) >= n // 8, 120, "some committed", 0.05)
    services_sh("stop", "postgres")
    try:
        env.produce(msgs[n // 2 :])  # arrives while the database is down
        try:
            wait_until(
                lambda: "unreachable" in w.http("/readyz")[1],
                60,
                "readiness to report postgres down",
            )
        except AssertionError as exc:  # say what the worker was doing
            raise AssertionError(f"{exc}; worker log tail:\n{w.log.read_text()[-3000:]}") from exc
        assert w.http("/readyz")[0] == 503
    finally:
        services_sh("up")
    members = wait_all_committed(env, n, timeout=180)
    assert members == reference(env)
    assert w.proc.poll() is None  # the same worker carried on
    wait_until(lambda: w.http("/readyz")[0] == 200, 60, "ready again")


def test_redis_down_clustering_continues_and_cache_is_rebuilt(env: Env) -> None:
    import redis

    n = 600
    key = f"{env.settings.prefix}:items:document/{env.settings.prefix}-m0"
    r = redis.Redis.from_url(env.settings.redis_url, decode_responses=True)
    services_sh("stop", "redis")
    try:
        env.produce(stream_messages(env, n, models=1, seed=17))
        w = env.start_worker()
        members = wait_all_committed(env, n)
        status, body = w.http("/readyz")
        assert status == 200 and json.loads(body)["redis"] == "degraded"
        assert "clusterer_redis_degraded 1.0" in w.http("/metrics")[1]
    finally:
        services_sh("up")
    wait_until(lambda: r.hlen(key) == n, 60, "the cache rebuilt from postgres")
    assert r.hgetall(key) == members
    wait_until(lambda: json.loads(w.http("/readyz")[1])["redis"] == "ok", 30, "redis ok")


def test_the_worker_process_freezes_its_startup_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """`clusterer worker` moves what start-up built out of the collector's full passes
    (each holds the GIL: the loop and the committer stall for it), after `start` and before
    the loop runs."""
    from stream import service

    seen: list[int] = []

    class Started:
        def __init__(self, *a: object, **kw: object) -> None:
            pass

        def install_signals(self) -> None:
            pass

        def start(self) -> None:
            seen.append(gc.get_freeze_count())

        def run(self) -> None:
            seen.append(gc.get_freeze_count())

        def close(self) -> None:
            pass

    monkeypatch.setattr(service, "Service", Started)
    gc.unfreeze()
    try:
        assert service.run_worker(Settings(), EngineConfig()) == 0
        assert seen[0] == 0 and seen[1] > 0
    finally:
        gc.unfreeze()
