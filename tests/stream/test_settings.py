from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERER_INPUT_TOPICS", "a, b,,c")
    monkeypatch.setenv("CLUSTERER_PARTITIONS", "12")
    monkeypatch.setenv("CLUSTERER_MIGRATE_ON_START", "no")
    monkeypatch.setenv("CLUSTERER_SHUTDOWN_SECONDS", "2.5")
    s = Settings.from_env(prefix="p")
    assert s.input_topics == ("a", "b", "c")
    assert s.partitions == 12 and s.migrate_on_start is False and s.shutdown_seconds == 2.5
    assert (s.by_scope_topic, s.clusters_topic, s.router_group) == (
        "p.by-scope",
        "p.clusters",
        "stage4-clusterer.router",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLUSTERER_PARTITIONS", "abc"),
        ("CLUSTERER_PARTITIONS", "0"),
        ("CLUSTERER_MIGRATE_ON_START", "maybe"),
        ("CLUSTERER_INPUT_TOPICS", " , "),
        ("CLUSTERER_BLAS_THREADS", "-1"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()


def test_cli_reports_a_bad_setting_in_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "lag"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "CLUSTERER_PARTITIONS": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "clusterer lag: CLUSTERER_PARTITIONS='abc' is not valid"
    ]


def test_the_worker_caps_its_blas_and_openmp_pools() -> None:
    """In a fresh process (the caps are process-wide): every native pool numpy and FAISS
    loaded runs one thread after `limit_threads(1)`, and keeps its default with 0."""
    code = (
        "import numpy, faiss, threadpoolctl;"
        "from stream.service import limit_threads;"
        "before = [p['num_threads'] for p in threadpoolctl.threadpool_info()];"
        "limit_threads(0); same = [p['num_threads'] for p in threadpoolctl.threadpool_info()];"
        "limit_threads(1); after = [p['num_threads'] for p in threadpoolctl.threadpool_info()];"
        "print(before == same, after)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert out[0] == "True"
    pools = json.loads(out[1])
    assert pools and set(pools) == {1}
