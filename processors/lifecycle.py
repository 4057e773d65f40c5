"""Maintenance of a scope at fixed item positions: fading, retirement, merges, updates.

Runs every `tick_items` items of a scope and at the first item `tick_seconds` of event time
after the last run, so where it runs depends on the items only, never on how the stream was
cut into batches or on the wall clock. This module decides; `ScopeState` carries out
(`retire`, `fold`, `emit_updates`).
"""

from __future__ import annotations

import heapq

import numpy as np

from processors.scope import ACTIVE, ScopeState


def tick(scope: ScopeState) -> None:
    scope.last_tick_time = scope.watermark
    retire_faded(scope)
    merge_touched(scope)
    scope.emit_updates()


def retire_faded(scope: ScopeState) -> None:
    cfg = scope.cfg
    live = scope.live_slots()
    if not live.size:
        return
    w_now = scope.weight_now(live, scope.watermark)
    order = np.lexsort((scope.cid[live], w_now))
    faded = set(int(s) for s in live[w_now < cfg.retire_weight])
    over = live.size - len(faded) - cfg.max_clusters_per_scope
    capped: list[int] = []
    if over > 0:
        for s in live[order]:
            if int(s) not in faded:
                capped.append(int(s))
                if len(capped) == over:
                    break
    for slot in sorted(faded, key=lambda s: int(scope.cid[s])):
        scope.retire(slot, "faded" if scope.status[slot] == ACTIVE else "expired_candidate")
    for slot in capped:
        scope.retire(slot, "capacity")


def avg_link(scope: ScopeState, a: int, b: int) -> float:
    """Mean member-to-member cosine of two clusters: (ls_a/w_a)·(ls_b/w_b)."""
    return float(scope.ls[a] @ scope.ls[b] / (scope.w[a] * scope.w[b]))


def merge_touched(scope: ScopeState) -> None:
    """Average-link merging around the clusters touched since the last tick: pairs whose
    mean member similarity reaches merge_threshold merge, best pair first."""
    thr = scope.cfg.merge_threshold  # validated > 0
    touched = sorted(scope.touched, key=lambda s: int(scope.cid[s]))
    touched = [s for s in touched if scope.cid[s] >= 0]
    if not touched or scope.n_used < 2:
        return
    version: dict[int, int] = {}
    heap: list[tuple[float, int, int, int, int]] = []

    # average-link needs 1/w of every cluster; free slots get 0, hence similarity 0, below any
    # positive threshold. Kept up to date across merges (only the two merged slots change).
    n = scope.n_used
    cid = scope.cid
    inv_w = np.zeros(n)
    live = cid[:n] >= 0
    inv_w[live] = 1.0 / scope.w[:n][live]
    ls = scope.ls[:n]

    cids = cid[:n].tolist()  # ids of live slots never change while merging
    push = heapq.heappush

    def push_neighbours(slots: list[int]) -> None:
        # exact average-link of each slot against every live cluster: one matrix product
        sims = (scope.ls[slots] @ ls.T) * inv_w
        sims *= inv_w[slots][:, None]
        sims[np.arange(len(slots)), slots] = -np.inf
        rows, cols = np.nonzero(sims >= thr)
        if not rows.size:
            return
        vals = sims[rows, cols].tolist()
        for r, b, v in zip(rows.tolist(), cols.tolist(), vals, strict=True):
            a = slots[r]
            ca, cb = cids[a], cids[b]
            if ca < cb:
                push(heap, (-v, ca, cb, version.get(a, 0), version.get(b, 0)))
            else:
                push(heap, (-v, cb, ca, version.get(b, 0), version.get(a, 0)))

    push_neighbours(touched)
    while heap:
        _, ca, cb, va, vb = heapq.heappop(heap)
        a = scope.slot_of.get(ca)
        b = scope.slot_of.get(cb)
        if a is None or b is None:
            continue
        if version.get(a, 0) != va or version.get(b, 0) != vb:
            continue
        absorber = scope.fold(a, b, reason="average_link")
        version[absorber] = version.get(absorber, 0) + 1
        inv_w[a + b - absorber] = 0.0
        inv_w[absorber] = 1.0 / scope.w[absorber]
        push_neighbours([absorber])
