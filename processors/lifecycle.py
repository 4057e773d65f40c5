"""Maintenance of a scope at fixed item positions: fading, retirement, merges, updates.

Runs every `tick_items` items of a scope and at the first item `tick_seconds` of event time
after the last run, so where it runs depends on the items only, never on how the stream was
cut into batches or on the wall clock.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from processors.scope import ACTIVE, ScopeState

_LN2 = math.log(2.0)


def tick(scope: ScopeState) -> None:
    scope.last_tick_time = scope.watermark
    retire_faded(scope)
    merge_touched(scope)
    emit_updates(scope)


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
        retire(scope, slot, "faded" if scope.status[slot] == ACTIVE else "expired_candidate")
    for slot in capped:
        retire(scope, slot, "capacity")


def retire(scope: ScopeState, slot: int, reason: str) -> None:
    scope.emit("retired", slot, reason=reason)
    scope._release(slot)


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

    def push_neighbours(slots: list[int]) -> None:
        # exact average-link of each slot against every live cluster: one matrix product
        sims = (scope.ls[slots] @ ls.T) * inv_w
        sims *= inv_w[slots][:, None]
        sims[np.arange(len(slots)), slots] = -np.inf
        rows, cols = np.nonzero(sims >= thr)
        for r, b in zip(rows.tolist(), cols.tolist(), strict=True):
            a = slots[r]
            lo, hi = (a, b) if cid[a] < cid[b] else (b, a)
            heapq.heappush(
                heap,
                (
                    -float(sims[r, b]),
                    int(cid[lo]),
                    int(cid[hi]),
                    version.get(lo, 0),
                    version.get(hi, 0),
                ),
            )

    push_neighbours(touched)
    while heap:
        _, ca, cb, va, vb = heapq.heappop(heap)
        a = scope.slot_of.get(ca)
        b = scope.slot_of.get(cb)
        if a is None or b is None:
            continue
        if version.get(a, 0) != va or version.get(b, 0) != vb:
            continue
        absorber = merge(scope, a, b, reason="average_link")
        version[absorber] = version.get(absorber, 0) + 1
        inv_w[a + b - absorber] = 0.0
        inv_w[absorber] = 1.0 / scope.w[absorber]
        push_neighbours([absorber])


def merge(scope: ScopeState, a: int, b: int, reason: str) -> int:
    """Fold the lighter cluster into the heavier (older id on equal weight); returns the
    absorber's slot. The absorbed id ends with a `merged` event naming it."""
    ta, tb = float(scope.tref[a]), float(scope.tref[b])
    t = max(ta, tb)
    hl = scope.cfg.half_life_seconds
    wa = float(scope.w[a]) * math.exp(-_LN2 * (t - ta) / hl)
    wb = float(scope.w[b]) * math.exp(-_LN2 * (t - tb) / hl)
    if (wb, -scope.cid[b]) > (wa, -scope.cid[a]):
        a, b = b, a
        wa, wb = wb, wa
    fa = wa / scope.w[a] if scope.w[a] else 0.0
    fb = wb / scope.w[b] if scope.w[b] else 0.0
    scope.ls[a] = scope.ls[a] * fa + scope.ls[b] * fb
    scope.w[a] = wa + wb
    scope.tref[a] = t
    n = math.sqrt(float(scope.ls[a] @ scope.ls[a]))
    scope.norm[a] = n
    scope.cent[a] = scope.ls[a] / n if n > 0 else 0.0
    scope.t_first[a] = min(scope.t_first[a], scope.t_first[b])
    scope.t_last[a] = max(scope.t_last[a], scope.t_last[b])
    moved = scope.members[b]
    scope.members[a].update(moved)
    new_no = int(scope.cid[a])
    for item in moved:
        scope.item_slot[item] = a
        scope.moves[item] = new_no
    scope.members[b] = {}
    scope.facets[a].absorb(scope.facets[b])
    _merge_reservoirs(scope, a, b)
    absorbed_id = scope.cluster_id(b)
    was_active = scope.status[a] == ACTIVE
    if scope.status[b] == ACTIVE or scope.w[a] >= scope.cfg.min_weight:
        scope.status[a] = ACTIVE
    scope.emit("merged", a, related=[absorbed_id], reason=reason)
    if not was_active and scope.status[a] == ACTIVE:
        scope.emit("created", a)
    scope._release(b)
    scope.touched.add(a)
    return a


def _merge_reservoirs(scope: ScopeState, a: int, b: int) -> None:
    r = scope.cfg.reservoir_size
    entries = []
    for s in (a, b):
        for p, item in enumerate(scope.res_ids[s]):
            if item is not None:
                entries.append((-scope.res_time[s, p], item, s, p))
    entries.sort()
    keep = entries[:r][::-1]  # oldest first, so the ring's next write replaces the oldest
    vec = np.zeros((r, scope.dim), dtype=np.float32)
    times = np.zeros(r)
    ids: list[str | None] = [None] * r
    for p, (nt, item, s, q) in enumerate(keep):
        vec[p] = scope.res_vec[s, q]
        times[p] = -nt
        ids[p] = item
    scope.res_vec[a] = vec
    scope.res_time[a] = times
    scope.res_ids[a] = ids
    scope.res_next[a] = len(keep)


def emit_updates(scope: ScopeState) -> None:
    for slot in sorted(scope.touched, key=lambda s: int(scope.cid[s])):
        if scope.cid[slot] >= 0 and scope.status[slot] == ACTIVE:
            scope.emit("updated", slot)
    scope.touched.clear()
