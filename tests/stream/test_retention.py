"""Retention in the running service and on the command line, against the real broker,
database and cache (dev/services.sh)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream import synthetic
from tests.conftest import ROOT, Services, wait_until
from tests.state.test_retention import dump, seed
from tests.stream.conftest import Env, WorkerProcess
from tests.stream.test_service import reference

# everything ended goes at the next run, every 0.3 s: the harshest policy
ZERO = {
    "CLUSTERER_RETENTION_INTERVAL_SECONDS": "0.3",
    "CLUSTERER_RETENTION_OUTBOX_SENT_HOURS": "0",
    "CLUSTERER_RETENTION_ENDED_CLUSTER_DAYS": "0",
    "CLUSTERER_RETENTION_RECONSOLIDATION_DAYS": "0",
}


def ending_stories(env: Env, n: int, models: int, seed: int) -> list:
    """Like test_service.stream_messages, but stories follow each other over months of event
    time (6 h between items, half-life 2 days): clusters retire and merge as they go."""
    out = []
    items = synthetic.stories(n, 32, n_stories=16, alive=3, seconds_per_item=6 * 3600, seed=seed)
    for i, item in enumerate(items):
        model = f"{env.settings.prefix}-m{i % models}"
        make = synthetic.embedded_document if i % 2 else synthetic.vector_event
        out.append((item.document_id.encode(), make(item, model)))
    return out


def committed(env: Env) -> int:
    """Sum of the next offsets stored per by-scope partition."""
    return int(env.sql("SELECT coalesce(sum(next_offset), 0) FROM consumed_offsets")[0][0])


_NO_LEADER_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def wait_all_committed(env: Env, n: int, timeout: float = 180.0) -> dict[str, str]:
    """Every routed record committed (memberships shrink as clusters end, so their count
    says nothing here): the stored offsets are past the last record of each partition."""

    def done() -> bool:
        try:
            recs = env.by_scope_records()
        except KafkaException as exc:  # the worker has just created the topic: no leader yet
            if exc.args[0].code() in _NO_LEADER_YET:
                return False
            raise
        if len(recs) < n:
            return False
        last: dict[int, int] = {}
        for m in recs:
            last[m.partition()] = max(last.get(m.partition(), 0), m.offset() + 1)
        rows = env.sql("SELECT partition, next_offset FROM consumed_offsets")
        stored = {r["partition"]: r["next_offset"] for r in rows}
        return all(stored.get(p, -1) >= off for p, off in last.items())

    wait_until(done, timeout, f"{n} records committed", 0.5)
    return env.memberships()


def metric(w: WorkerProcess, name: str, labels: str = "") -> float:
    _, body = w.http("/metrics")
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def scope_rows(env: Env, query: str) -> list:
    return env.sql(query, f"%{env.settings.prefix}%")


def test_restart_after_retention_rebuilds_the_same_state(env: Env) -> None:
    """Retention runs beside the batch commits; a kill -9 and a replay from the checkpoint
    still give exactly the memberships of one engine over the whole stream."""
    n = 2400
    msgs = ending_stories(env, n, models=2, seed=21)
    env.produce(msgs[: n // 2])
    w = env.start_worker(**ZERO)
    wait_until(lambda: committed(env) >= n // 4, 120, "some committed", 0.05)
    wait_until(
        lambda: metric(w, "clusterer_retention_rows_removed_total", '{table="outbox"}') > 0,
        60,
        "retention removed sent outbox rows",
    )
    w.kill9()
    assert committed(env) < n  # mid-stream: the rest comes after the restart
    env.produce(msgs[n // 2 :])
    w2 = env.start_worker(**ZERO)
    members = wait_all_committed(env, n, timeout=180)
    assert members == reference(env)
    wait_until(
        lambda: (
            not scope_rows(
                env,
                "SELECT 1 FROM clusters WHERE status IN ('retired', 'merged')"
                " AND cluster_type LIKE $1",
            )
        ),
        60,
        "every ended cluster removed",
    )
    assert metric(w2, "clusterer_retention_rows_removed_total", '{table="clusters"}') > 0
    # live clusters intact: sizes match their member rows and the reference
    sizes = scope_rows(
        env,
        "SELECT c.id, c.size, count(i.id) AS rows FROM clusters c LEFT JOIN cluster_items i"
        " ON i.cluster_id = c.id WHERE c.cluster_type LIKE $1 GROUP BY c.id, c.size",
    )
    assert all(r["size"] == r["rows"] for r in sizes)
    assert env.memberships() == members


def test_forget_and_retention_leave_no_ghost_rows(env: Env) -> None:
    n = 1500
    env.produce(ending_stories(env, n, models=1, seed=23))
    w = env.start_worker(**ZERO)
    members = wait_all_committed(env, n)
    victim = sorted(members)[11]
    doc = env.sql("SELECT document_id FROM cluster_items WHERE item_id=$1", victim)[0][0]
    out = env.cli("forget", "--document-id", doc)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: victim not in env.memberships(), 60, "the item removed")
    runs = metric(w, "clusterer_retention_runs_total", '{result="done"}')
    wait_until(
        lambda: metric(w, "clusterer_retention_runs_total", '{result="done"}') >= runs + 2,
        60,
        "two more retention runs",
    )

    def ghosts() -> dict[str, int]:
        q = {
            "items of the forgotten document": "SELECT count(*) FROM cluster_items"
            f" WHERE document_id = '{doc}'",
            "members of ended or missing clusters": "SELECT count(*) FROM cluster_items i"
            " LEFT JOIN clusters c ON c.id = i.cluster_id AND c.status IN ('candidate',"
            " 'active') WHERE c.id IS NULL",
            "events of missing clusters": "SELECT count(*) FROM cluster_events e WHERE NOT"
            " EXISTS (SELECT 1 FROM clusters c WHERE c.id = e.cluster_id)",
            "ended clusters past the window": "SELECT count(*) FROM clusters"
            " WHERE status IN ('retired', 'merged') AND ended_event_time IS NOT NULL",
            "sent outbox rows past the window": "SELECT count(*) FROM outbox"
            " WHERE sent_at < now() - interval '5 seconds'",
            "medoid refs to another item": "SELECT count(*) FROM reconsolidation_clusters g"
            " JOIN cluster_items i ON i.id = g.medoid_item_ref"
            " WHERE i.item_id <> g.medoid_item_id",
            "groups without a run": "SELECT count(*) FROM reconsolidation_clusters g WHERE"
            " NOT EXISTS (SELECT 1 FROM reconsolidation_runs r WHERE r.id = g.run_id)",
        }
        return {k: int(env.sql(v)[0][0]) for k, v in q.items()}

    wait_until(lambda: not any(ghosts().values()), 60, "no ghost rows")
    after = env.memberships()
    assert victim not in after
    assert after == reference(env)
    body = w.http("/metrics")[1]
    for name in (
        'clusterer_retention_table_rows{table="clusters"}',
        'clusterer_retention_table_bytes{table="outbox"}',
        'clusterer_retention_oldest_age_seconds{table="reconsolidation_runs"}',
    ):
        assert name in body


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "retention", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_dry_run_says_per_table_what_would_go(fresh_database: tuple[str, str]) -> None:
    import os

    _, dsn = fresh_database
    seed(dsn)
    before = dump(dsn)
    env = dict(os.environ, CLUSTERER_POSTGRES_DSN=dsn)
    out = run_cli(env, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert dump(dsn) == before
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[1:]}
    assert rows["clusters"][0] == "3" and rows["outbox"][0] == "1"
    assert rows["reconsolidation_runs"][0] == "2" and rows["cluster_events"][0] == "3"
    out = run_cli(env)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[1:]}
    assert rows["clusters"][:2] == ["3", "6"]  # removed, rows now
    assert "stamped: 1" in out.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLUSTERER_RETENTION_ENDED_CLUSTER_DAYS", "-1"),
        ("CLUSTERER_RETENTION_OUTBOX_SENT_HOURS", "nan"),
        ("CLUSTERER_RETENTION_RECONSOLIDATION_DAYS", "soon"),
        ("CLUSTERER_RETENTION_BATCH_ROWS", "0"),
        ("CLUSTERER_RETENTION_INTERVAL_SECONDS", "-5"),
    ],
)
def test_a_bad_policy_is_one_line_and_exit_2(name: str, value: str) -> None:
    out = run_cli({"PATH": "/usr/bin:/bin", name: value}, "--dry-run")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterer retention: ") and name in lines[0]


def test_the_service_exports_the_policy_windows() -> None:
    """What an alert compares the oldest row's age with (deploy/prometheus/alerts.yml)."""
    from state.retention import RetentionPolicy
    from stream import metrics
    from stream.retention import RetentionThread

    policy = RetentionPolicy(outbox_sent_hours=2, ended_cluster_days=3, reconsolidation_days=4)
    RetentionThread("postgresql://unused", policy, 60.0)  # not started: the windows are set
    window = {
        t: metrics.REGISTRY.get_sample_value("clusterer_retention_window_seconds", {"table": t})
        for t in ("outbox", "clusters", "reconsolidation_runs", "cluster_events")
    }
    assert window == {
        "outbox": 2 * 3600.0,
        "clusters": 3 * 86400.0,
        "reconsolidation_runs": 4 * 86400.0,
        "cluster_events": None,  # its oldest row may be a live cluster's: no window applies
    }


def test_the_thread_survives_a_failing_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit test: an unexpected error in one run is counted as a failed run and logged; the
    next runs still happen (the thread is all that prunes the database)."""
    from state.retention import RetentionPolicy
    from stream import metrics, retention

    calls: list[int] = []

    async def broken(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise KeyError("a bug")

    monkeypatch.setattr(retention, "run_with_stats", broken)

    def failed() -> float:
        v = metrics.REGISTRY.get_sample_value(
            "clusterer_retention_runs_total", {"result": "failed"}
        )
        return v or 0.0

    before = failed()
    t = retention.RetentionThread("postgresql://unused", RetentionPolicy(), 0.01)
    t.start()
    try:
        wait_until(lambda: len(calls) >= 3, 30, "three runs")
    finally:
        t.close()
    assert t.is_alive() is False
    assert failed() - before >= 3


def test_two_workers_and_the_api_beside_retention(env: Env, services: Services) -> None:
    """Both workers run retention every 0.3 s with everything ended due at once (the lock
    lets one run at a time); the API serves lists of ended clusters and statistics all along.
    Nothing fails, nothing live goes, the end state is the reference's."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.api.conftest import api_settings, auth

    n = 2000
    msgs = ending_stories(env, n, models=8, seed=29)
    env.produce(msgs[: n // 2])
    workers = [env.start_worker(**ZERO), env.start_worker(**ZERO)]
    app = create_app(
        api_settings(None, services, dsn=env.settings.postgres_dsn, prefix=env.settings.prefix)
    )
    answers: list[int] = []
    with TestClient(app, raise_server_exceptions=False) as api:
        api.headers.update(auth())

        def serve_until(target: int) -> bool:
            for path in (
                "/api/v1/clusters?status=retired&status=merged&limit=100",
                "/api/v1/clusters?limit=100",
                "/api/v1/statistics",
            ):
                answers.append(api.get(path).status_code)
            return committed(env) >= target

        wait_until(lambda: serve_until(n // 2), 180, "the first half committed", 0.2)
        env.produce(msgs[n // 2 :])
        wait_until(lambda: serve_until(n), 180, "the second half committed", 0.2)
        members = wait_all_committed(env, n)
        stats = api.get("/api/v1/statistics")
    assert answers and set(answers) == {200}, sorted(set(answers))
    assert members == reference(env)
    assert stats.status_code == 200 and stats.json()["storage"]["clusters"]["rows"] > 0
    wait_until(
        lambda: (
            not scope_rows(
                env,
                "SELECT 1 FROM clusters WHERE status IN ('retired', 'merged') AND"
                " cluster_type LIKE $1",
            )
        ),
        60,
        "every ended cluster removed",
    )
    assert env.memberships() == members
    for w in workers:
        # each worker's thread ran (done, or skipped while the other held the lock); none failed
        runs = sum(
            metric(w, "clusterer_retention_runs_total", f'{{result="{r}"}}')
            for r in ("done", "skipped")
        )
        assert runs > 0
        assert metric(w, "clusterer_retention_runs_total", '{result="failed"}') == 0
    assert (
        sum(
            metric(w, "clusterer_retention_rows_removed_total", '{table="clusters"}')
            for w in workers
        )
        > 0
    )
