"""The service benchmark's summary over rounds."""

from __future__ import annotations

from benchmarks.e2e_service import medians


def test_medians_take_each_figure_over_the_rounds_that_have_it() -> None:
    rounds: list[dict[str, object]] = [
        {"events_per_s": 3000, "ratio_to_floor": 0.3, "cpu_us_per_event_all_processes": 150.0},
        {"events_per_s": 9000, "ratio_to_floor": 0.1},
        {"events_per_s": 5000, "ratio_to_floor": 0.2, "cpu_us_per_event_all_processes": 130.0},
    ]
    assert medians("throughput", rounds) == {
        "mode": "throughput, median of rounds",
        "rounds": 3,
        "events_per_s": 5000.0,
        "ratio_to_floor": 0.2,
        "cpu_us_per_event_all_processes": 140.0,
    }


def test_latency_medians_take_the_latency_figures() -> None:
    rounds: list[dict[str, object]] = [
        {"offered_events_per_s": 4000, "p50_ms": 100.0, "p99_ms": 400.0, "max_ms": 500.0},
        {"offered_events_per_s": 5000, "p50_ms": 2000.0, "p99_ms": 3500.0, "max_ms": 3600.0},
        {"offered_events_per_s": 4500, "p50_ms": 150.0, "p99_ms": 700.0, "max_ms": 900.0},
    ]
    assert medians("latency", rounds) == {
        "mode": "latency, median of rounds",
        "rounds": 3,
        "offered_events_per_s": 4500.0,
        "p50_ms": 150.0,
        "p99_ms": 700.0,
        "max_ms": 900.0,
    }
