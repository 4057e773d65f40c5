"""`clusterer backfill --publish` against the real broker, worker and database: every vector
arrives once per run, and running the backfill again counts nothing twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, wait_until
from tests.stream.conftest import Env
from tests.stream.test_stage3 import make_dir, meta


def test_publishing_a_directory_twice_counts_nothing_twice(env: Env, tmp_path: Path) -> None:
    d = tmp_path / "vector_indices"
    counts = make_dir(d, n=25, types=("documents", "events"))
    n = sum(counts.values())
    model = f"{env.settings.prefix}-m"

    def backfill() -> None:
        r = subprocess.run(
            [sys.executable, "-m", "stream.cli", "backfill", "--indices", str(d), "--publish",
             "--model", model],
            cwd=ROOT, env=env.env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stderr.strip().splitlines()[-1])["published"] == n

    def live_sizes() -> int:
        rows = env.sql(
            "SELECT coalesce(sum(size), 0) AS s FROM clusters"
            " WHERE cluster_type LIKE $1 AND status IN ('candidate', 'active')",
            f"%{model}%",
        )
        return int(rows[0]["s"])

    backfill()
    env.start_worker()

    def all_in() -> dict[str, str] | None:
        m = env.memberships()
        return m if len(m) >= n else None

    first = wait_until(all_in, 120, f"{n} memberships")
    vector_ids = set(meta(d, "documents")["id_map"]) | set(meta(d, "events")["id_map"])
    assert set(first) == vector_ids
    wait_until(lambda: live_sizes() == n, 60, "cluster sizes adding up to the items")

    backfill()  # the same vectors, the same keys, again
    env.consume_all(env.settings.assignments_topic, 2 * n, timeout=120)  # all re-sent handled
    again = env.memberships()
    assert set(again) == vector_ids and len(again) == n
    assert live_sizes() == n
    rows = env.sql(
        "SELECT item_type, count(*) AS c FROM cluster_items WHERE cluster_type LIKE $1"
        " GROUP BY item_type",
        f"%{model}%",
    )
    assert {r["item_type"]: r["c"] for r in rows} == {
        "document": counts["documents"],
        "event": counts["events"],
    }
