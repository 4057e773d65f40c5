"""Every metric the Grafana dashboard and the Prometheus alerts name is one the service
exports: a renamed metric must not leave an empty panel or an alert that can never fire."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from stream import metrics
from tests.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "clusterer.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
FROM_PROMETHEUS = {"up"}  # written by Prometheus itself for every target

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset",
             "group_left", "group_right", "inf", "nan"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside matchers and grouping clauses) or strings."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {
        name for name, call in _IDENT.findall(text) if not call and name.lower() not in _KEYWORDS
    }


def exported() -> set[str]:
    """Series names the registry exposes (families with no labelled child yet included)."""
    names: set[str] = set()
    for line in generate_latest(metrics.REGISTRY).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"]["query"])
            assert inner, var["query"]
            yield f"variable {var['name']}", inner.group(1)


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def test_the_parser_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (job, le) (rate(clusterer_x_bucket{job=~"$job",'
        ' le!="a b"}[$__rate_interval]))) > 2 and on (job) up offset 5m'
        " unless deriv(sum without (p) (lag)[15m:1m]) > 0"
    )
    assert metric_names(expr) == {"clusterer_x_bucket", "up", "lag"}


@pytest.mark.parametrize(
    ("source", "exprs"),
    [("dashboard", list(dashboard_exprs())), ("alert rules", list(rule_exprs()))],
)
def test_every_named_metric_is_exported(source: str, exprs: list[tuple[str, str]]) -> None:
    known = exported() | FROM_PROMETHEUS
    named = {(where, m) for where, e in exprs for m in metric_names(e)}
    assert len({m for _, m in named}) >= 5, f"{source}: the parser found almost nothing"
    missing = sorted((where, m) for where, m in named if m not in known)
    assert not missing, f"{source} names metrics the service does not export: {missing}"


def test_the_dashboard_covers_what_operators_watch() -> None:
    named = {m for _, e in dashboard_exprs() for m in metric_names(e)}
    for m in (
        "clusterer_events_consumed_total",
        "clusterer_consumer_lag",
        "clusterer_event_time_lag_seconds",
        "clusterer_batch_seconds_bucket",
        "clusterer_events_dead_lettered_total",
        "clusterer_active_clusters",
        "clusterer_reconsolidation_seconds_bucket",
        "clusterer_fenced_batches_total",
        "clusterer_redis_degraded",
        "process_resident_memory_bytes",
        "clusterer_retention_rows_removed_total",
        "clusterer_retention_table_bytes",
        "clusterer_retention_oldest_age_seconds",
        "clusterer_retention_window_seconds",
        "clusterer_retention_runs_total",
    ):
        assert m in named, m


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
