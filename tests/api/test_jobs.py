"""Batch jobs: upload and directory jobs, progress, cancel, results as JSONL equal to an
offline engine run over the same events, and jobs that survive an API restart."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from processors import Batch, Engine, EngineConfig, ScopeKey
from schemas.inputs import VectorEvent
from stream import backfill, synthetic
from stream.stage3 import open_directory
from stream.stage3_fixture import FixtureOptions, write_directory
from tests.api.conftest import ADMIN_TOKEN, READ_TOKEN, api_settings, auth
from tests.conftest import ROOT, Services, blobs, wait_until
from tests.stream.conftest import free_port

NDJSON = {"Content-Type": "application/x-ndjson"}


def jsonl(n: int, dim: int = 16, seed: int = 1, shuffle_times: bool = True) -> bytes:
    x, y = blobs(n, dim, 4, seed=seed)
    rng = np.random.default_rng(seed)
    times = 1_765_000_000 + rng.permutation(n) * 60 if shuffle_times else np.arange(n) * 60
    lines = [
        json.dumps(
            {
                "item_id": f"it-{i}",
                "document_id": f"d-{i // 3}",
                "embedding_type": "document",
                "embedding_model": "m",
                "event_time": int(times[i]),
                "metadata": {"title": f"topic{int(y[i])} story"},
                "vector": [float(v) for v in x[i]],
            }
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def offline(data: bytes) -> list[dict]:
    """What the job must produce: the engine over the events in event-time order."""
    events = sorted(
        (VectorEvent.model_validate_json(line) for line in data.splitlines() if line.strip()),
        key=lambda e: e.event_time,
    )
    eng = Engine(EngineConfig())
    key = ScopeKey("document", "m")  # every event of these tests
    for i in range(0, len(events), 1000):
        part = events[i : i + 1000]
        eng.learn(
            Batch(
                np.asarray([e.vector for e in part], dtype=np.float32),
                [e.item_id for e in part],
                np.asarray([e.event_time for e in part]),
                [e.document_id for e in part],
                [e.metadata for e in part],
                [key] * len(part),
            )
        )
    eng.flush()
    return [json.loads(r.model_dump_json()) for r in eng.results()]


def results(c: TestClient | httpx.Client, job_id: str) -> list[dict]:
    r = c.get(f"/api/v1/cluster/results/{job_id}", headers=auth())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


def wait_job(c: TestClient | httpx.Client, job_id: str, state: str, timeout: float = 120) -> dict:
    def done() -> dict | None:
        j = c.get(f"/api/v1/cluster/status/{job_id}", headers=auth()).json()
        ended = j["status"] in ("succeeded", "failed", "cancelled")
        assert j["status"] == state or not ended, f"job ended {j['status']}: {j['error']}"
        return j if j["status"] == state else None

    return dict(wait_until(done, timeout, f"job {job_id} {state}"))


@pytest.fixture
def jobs_client(
    services: Services, fresh_database: tuple[str, str], tmp_path: Path
) -> Iterator[TestClient]:
    name, dsn = fresh_database
    root = tmp_path / "data"
    root.mkdir()
    app = create_app(api_settings(None, services, dsn=dsn, prefix=name, data_root=root))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(auth(ADMIN_TOKEN))
        yield c


def test_upload_job_runs_the_engine_offline(jobs_client: TestClient) -> None:
    data = jsonl(1500)
    r = jobs_client.post(
        "/api/v1/cluster/batch", content=data, headers=NDJSON, params={"name": "t"}
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["items_total"] == 1500
    done = wait_job(jobs_client, job["job_id"], "succeeded")
    assert done["progress"] == 1.0 and done["items_done"] == 1500
    got = results(jobs_client, job["job_id"])
    assert got == offline(data)
    assert done["clusters"] == len(got) > 0
    # the live stream's tables are untouched
    stats = jobs_client.get("/api/v1/statistics").json()
    assert stats["scopes"] == [] and stats["batch_jobs"] == {"succeeded": 1}


def test_vectors_the_engine_cannot_take_are_counted_not_fatal(jobs_client: TestClient) -> None:
    good = jsonl(200, seed=3)
    base = json.loads(good.splitlines()[0])
    bad = [
        {**base, "item_id": "zero", "vector": [0.0] * 16},  # no direction
        {**base, "item_id": "short", "vector": [1.0, 0.0, 0.0]},  # not the scope's size
    ]
    data = good + b"".join(json.dumps(b).encode() + b"\n" for b in bad)
    r = jobs_client.post("/api/v1/cluster/batch", content=data, headers=NDJSON)
    assert r.status_code == 202, r.text
    done = wait_job(jobs_client, r.json()["job_id"], "succeeded")
    assert done["items_rejected"] == 2 and done["items_done"] == 202
    assert results(jobs_client, done["job_id"]) == offline(good)


def test_bad_uploads_are_refused_naming_the_line(jobs_client: TestClient) -> None:
    good = jsonl(3).splitlines()
    bad = b"\n".join(
        [good[0], good[1].replace(b'"embedding_type": "document"', b'"embedding_type": "x"')]
    )
    r = jobs_client.post("/api/v1/cluster/batch", content=bad, headers=NDJSON)
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "body.line[2].embedding_type"
    r = jobs_client.post("/api/v1/cluster/batch", content=b"\n\n", headers=NDJSON)
    assert r.status_code == 422
    r = jobs_client.post(
        "/api/v1/cluster/batch", content=b"x", headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 415 and r.json()["error"]["request_id"]
    assert jobs_client.get("/api/v1/cluster/status/abc123").status_code == 404
    assert jobs_client.get("/api/v1/cluster/results/abc123").status_code == 404


def test_directory_job_and_traversal(jobs_client: TestClient) -> None:
    root: Path = jobs_client.app.state.settings.data_root  # type: ignore[attr-defined]
    d = root / "stage3" / "run1"
    d.mkdir(parents=True)
    data = jsonl(600, seed=5)
    lines = data.splitlines(keepends=True)
    (d / "a.jsonl").write_bytes(b"".join(lines[:300]))
    (d / "b.jsonl").write_bytes(b"".join(lines[300:]))
    r = jobs_client.post("/api/v1/cluster/batch", json={"path": "stage3/run1", "name": "dir"})
    assert r.status_code == 202, r.text
    done = wait_job(jobs_client, r.json()["job_id"], "succeeded")
    assert done["items_total"] == 600 and done["source_path"] == "stage3/run1"
    assert results(jobs_client, done["job_id"]) == offline(data)
    for bad in ("../", "/etc", "stage3/../../x", "stage3/run1/../../.."):
        r = jobs_client.post("/api/v1/cluster/batch", json={"path": bad})
        assert r.status_code == 422, bad
        assert r.json()["error"]["fields"][0]["field"] == "body.path"
    r = jobs_client.post("/api/v1/cluster/batch", json={"path": "nothing-here"})
    assert r.status_code == 422
    r = jobs_client.post("/api/v1/cluster/batch", json={"path": "stage3", "extra": 1})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "body.extra"


def test_stage3_directory_job_equals_the_offline_backfill(jobs_client: TestClient) -> None:
    """A Stage 3 index directory (the four FAISS indices + metadata JSON) under the data
    root: the job's clusters are those `clusterer backfill --offline` writes."""
    root: Path = jobs_client.app.state.settings.data_root  # type: ignore[attr-defined]
    d = root / "stage3" / "vector_indices"
    items = list(synthetic.stories(60, 32, n_stories=5, alive=3, seed=4))
    write_directory(
        d,
        np.vstack([it.vector for it in items]),
        [it.title for it in items],
        options=FixtureOptions(events=(1, 3), entities=(2, 3), storylines=(1, 2)),
    )
    total = len(open_directory(d, "m"))
    r = jobs_client.post("/api/v1/cluster/batch", json={"path": "stage3/vector_indices"})
    assert r.status_code == 422  # the metadata names no model and the job none
    assert "model" in r.json()["error"]["message"]
    spec = {"path": "stage3/vector_indices", "model": "m"}
    r = jobs_client.post("/api/v1/cluster/batch", json=spec)
    assert r.status_code == 202, r.text
    assert r.json()["items_total"] == total
    done = wait_job(jobs_client, r.json()["job_id"], "succeeded")
    assert done["items_done"] == total and done["items_rejected"] == 0
    buf = io.StringIO()
    backfill.offline(open_directory(d, "m"), EngineConfig(), buf)
    want = sorted((json.loads(line) for line in buf.getvalue().splitlines()), key=_key)
    got = sorted(results(jobs_client, done["job_id"]), key=_key)
    assert got == want and len(got) > 0
    assert {g["cluster_type"] for g in got} >= {"document", "event"}
    # a broken Stage 3 directory is refused at submission with the reader's one line
    (d / "events_metadata.json").unlink()
    r = jobs_client.post("/api/v1/cluster/batch", json=spec)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["fields"][0]["field"] == "body.path" and "events.index" in err["message"]


def _key(c: dict) -> tuple[str, str]:
    return (c["scope"], c["cluster_id"])


def test_cancel(services: Services, fresh_database: tuple[str, str]) -> None:
    name, dsn = fresh_database
    app = create_app(api_settings(None, services, dsn=dsn, prefix=name, job_runners=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(auth(ADMIN_TOKEN))
        job = c.post("/api/v1/cluster/batch", content=jsonl(10), headers=NDJSON).json()
        r = c.post(f"/api/v1/cluster/cancel/{job['job_id']}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert c.get(f"/api/v1/cluster/results/{job['job_id']}").status_code == 409


# ---------------------------------------------------------------------- restarts
class ApiProcess:
    def __init__(self, dsn: str, prefix: str, services: Services, **env: str) -> None:
        self.port = free_port()
        log = ROOT / "var" / "test-logs" / f"api-{prefix}-{self.port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        full = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLUSTERER_")},
            "CLUSTERER_POSTGRES_DSN": dsn,
            "CLUSTERER_REDIS_URL": services.redis,
            "CLUSTERER_KAFKA_BOOTSTRAP": services.kafka,
            "CLUSTERER_PREFIX": prefix,
            "CLUSTERER_API_PORT": str(self.port),
            "CLUSTERER_API_HOST": "127.0.0.1",
            "CLUSTERER_API_TOKENS": READ_TOKEN,
            "CLUSTERER_API_ADMIN_TOKENS": ADMIN_TOKEN,
            "CLUSTERER_API_JOB_LEASE_SECONDS": "2",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "api"],
            cwd=ROOT,
            env=full,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

        def up() -> bool:
            try:
                return self.http.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 60, "the API to answer")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        self.http.close()


def test_a_job_survives_an_api_restart(services: Services, fresh_database: tuple[str, str]) -> None:
    """Accepted by an API that dies (kill -9) before running it; the next API runs it."""
    name, dsn = fresh_database
    data = jsonl(800, seed=9)
    first = ApiProcess(dsn, name, services, CLUSTERER_API_JOB_RUNNERS="0")
    try:
        r = first.http.post(
            "/api/v1/cluster/batch", content=data, headers={**NDJSON, **auth(ADMIN_TOKEN)}
        )
        assert r.status_code == 202
        job_id = r.json()["job_id"]
    finally:
        first.kill9()
    second = ApiProcess(dsn, name, services)
    try:
        done = wait_job(second.http, job_id, "succeeded")
        assert done["items_done"] == 800
        assert results(second.http, job_id) == offline(data)
    finally:
        second.kill9()


def test_a_running_job_resumes_from_its_checkpoint(
    services: Services, fresh_database: tuple[str, str]
) -> None:
    """An API stops while its job runs; the next one resumes from the checkpoint in
    PostgreSQL (not from zero) and the results equal an uninterrupted run."""
    name, dsn = fresh_database
    data = jsonl(12_000, dim=8, seed=4)
    s = api_settings(None, services, dsn=dsn, prefix=name, job_checkpoint_items=1024)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        c.headers.update(auth(ADMIN_TOKEN))
        job_id = c.post("/api/v1/cluster/batch", content=data, headers=NDJSON).json()["job_id"]

        def checkpointed() -> bool:
            j = c.get(f"/api/v1/cluster/status/{job_id}").json()
            return j["status"] == "running" and j["items_done"] >= 2048

        wait_until(checkpointed, 60, "a checkpoint", interval=0.02)
    # the API is gone (its runner handed the job back); a new one resumes it
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        c.headers.update(auth(ADMIN_TOKEN))
        done = wait_job(c, job_id, "succeeded", 180)
        assert done["resumed_from"] >= 2048  # not from zero: from its checkpoint
        assert results(c, job_id) == offline(data)
