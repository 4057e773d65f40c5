"""The throughput benchmark's summary over rounds."""

from __future__ import annotations

from benchmarks.e2e_service import medians


def test_medians_take_each_figure_over_the_rounds_that_have_it() -> None:
    rounds: list[dict[str, object]] = [
        {"events_per_s": 3000, "ratio_to_floor": 0.3, "cpu_us_per_event_all_processes": 150.0},
        {"events_per_s": 9000, "ratio_to_floor": 0.1},
        {"events_per_s": 5000, "ratio_to_floor": 0.2, "cpu_us_per_event_all_processes": 130.0},
    ]
    assert medians(rounds) == {
        "mode": "throughput, median of rounds",
        "rounds": 3,
        "events_per_s": 5000.0,
        "ratio_to_floor": 0.2,
        "cpu_us_per_event_all_processes": 140.0,
    }
