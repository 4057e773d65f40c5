"""Where the engine's time goes: wall time per step, by wrapping the engine's internal steps
for the length of a `with StepTimer() as steps:` block (benchmark instrumentation only; the
wrappers cost well under a microsecond per call).

Steps (nested ones are included in their parent): `assign` (all of a segment's assignment)
with `search` (the FAISS or numpy centroid search), `kernel` (the compiled sequential loop)
and `record` (memberships, rings, promotions); `maintenance` (fading, retirement, merges,
update events) with `merge` (average-link merging) and `fold` (the merges themselves);
`finish` (moves and touched cluster states of a call's result).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from types import TracebackType
from typing import Any

import processors.engine as engine_mod
import processors.lifecycle as lifecycle_mod
import processors.scope as scope_mod

_TARGETS: list[tuple[Any, str, str]] = [
    (scope_mod, "knn_inner_product", "search"),
    (scope_mod, "assign_segment", "kernel"),
    (scope_mod.ScopeState, "assign", "assign"),
    (scope_mod.ScopeState, "_record_segment", "record"),
    (lifecycle_mod, "tick", "maintenance"),
    (lifecycle_mod, "merge_touched", "merge"),
    (scope_mod.ScopeState, "fold", "fold"),
    (engine_mod.Engine, "_finish", "finish"),
]
ORDER = [label for _, _, label in _TARGETS]


class StepTimer:
    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        seconds, clock = self.seconds, time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += clock() - t0

        return timed

    def __enter__(self) -> StepTimer:
        for owner, name, label in _TARGETS:
            fn = getattr(owner, name)
            self._saved.append((owner, name, fn))
            setattr(owner, name, self._wrap(fn, label))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)
        self._saved.clear()

    def per_item_us(self, items: int) -> dict[str, float]:
        return {k: round(1e6 * self.seconds[k] / items, 1) for k in ORDER}
