"""Liveness as the HTTP probe reads it (`stream.http.Health`)."""

from __future__ import annotations

import time

from stream.http import Health


def test_alive_only_while_every_stage_beats() -> None:
    """The router and the clustering worker run in threads of their own: a stuck stage must
    fail the probe even while the other one goes on beating."""
    health = Health(stall_seconds=30.0)
    assert health.alive(), "starting: alive until the stall time passes"
    health.beat("router")
    health.beat("cluster")
    assert health.alive()
    health.beats["cluster"] = time.monotonic() - 31.0  # the clustering stage stopped beating
    health.beat("router")
    assert not health.alive()
    health.beat("cluster")
    assert health.alive()


def test_a_start_that_never_beats_is_not_alive() -> None:
    health = Health(stall_seconds=30.0)
    health.started = time.monotonic() - 31.0
    assert not health.alive()
