"""Where a worker's time goes, step by step: wall seconds (what the loop waited, also on
PostgreSQL or the broker) and this thread's CPU seconds (what the step computed, which the
other processes on a shared machine do not inflate). The per-batch wall times feed the
`clusterer_batch_seconds` histogram; the running totals are what `benchmarks/e2e_service.py`
reads."""

from __future__ import annotations

import time


class StepClock:
    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        """wall seconds per step since start"""
        self.cpu: dict[str, float] = {}
        """thread CPU seconds per step since start"""
        self.batch: dict[str, float] = {}
        """wall seconds per step of the current batch (since `begin`)"""
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def begin(self) -> None:
        """A new batch: laps count from here."""
        self.batch = {}
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def lap(self, step: str) -> None:
        """What passed since the last lap (or `begin`) was `step`."""
        wall, cpu = time.perf_counter(), time.thread_time()
        dw, dc = wall - self._wall, cpu - self._cpu
        self._wall, self._cpu = wall, cpu
        self.batch[step] = self.batch.get(step, 0.0) + dw
        self.wall[step] = self.wall.get(step, 0.0) + dw
        self.cpu[step] = self.cpu.get(step, 0.0) + dc
