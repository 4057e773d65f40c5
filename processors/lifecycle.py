"""Maintenance of a scope at fixed item positions: fading, retirement, merges, updates.

Runs every `tick_items` items of a scope and at the first item `tick_seconds` of event time
after the last run, so where it runs depends on the items only, never on how the stream was
cut into batches or on the wall clock. This module decides; `ScopeState` carries out
(`retire`, `fold`, `emit_updates`).
"""

from __future__ import annotations

import heapq

import numpy as np
import numpy.typing as npt

from processors.scope import ACTIVE, FoldPlan, ScopeState

# float32 cosines of unit rows (dimension < 10^4) are within COS_ERR of the exact ones; the
# link bound keeps pairs within 1e-3 of the threshold, so derived cosines must stay within
# MAX_COS_ERR of the exact ones to be used
COS_ERR = 1e-4
MAX_COS_ERR = 5e-4


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
    # the live clusters as of the tick are the rows of the scope's compact centroid matrix,
    # held in place while merging: merges only remove clusters (their 1/w becomes 0, hence
    # similarity 0, below any positive threshold) and change the absorber's centroid, which
    # a fold writes into its row. The float64 sums are read from the scope by slot (a fold
    # rewrites the absorber's there): a compact copy of every live row cost ~1.6 ms per tick
    # at 3,200 clusters of 768-d
    with scope.centroids.held():
        _merge_rows(scope, touched, thr)


def _merge_rows(scope: ScopeState, touched: list[int], thr: float) -> None:
    # heap entries (-link, id_a, id_b, version_a, version_b, row_a, row_b) with id_a < id_b:
    # the rows only carry the pair (the ids decide every tie); an entry is stale once a row's
    # version moved, which happens to the absorber and to the absorbed cluster of each fold
    heap: list[tuple[float, int, int, int, int, int, int]] = []
    cid = scope.cid
    live = scope.centroids.slots
    row_of = scope.centroids.row_of
    ls = scope.ls
    inv_w = 1.0 / scope.w[live]
    cids = cid[live].tolist()  # ids of live clusters never change while merging
    slot_l = live.tolist()
    ver = [0] * live.size
    push = heapq.heappush

    # a bound on each average link from the float32 centroids, to skip most of the exact
    # products after a merge: link(a, b) = coh_a coh_b cos(a, b), coh = |ls| / w <= 1, and
    # the float32 cosine is within 1e-4 of the exact one (unit rows, dimension < 10^4)
    cent = scope.centroids.rows
    coh = scope.norm[live] * inv_w
    # each row's float32 cosines to every row, where known: the touched rows' from the
    # first product, an absorber's from its parts' (below), with a bound on their error;
    # columns of rows changed by a fold since are recomputed when used
    cos_of: dict[int, npt.NDArray[np.float32]] = {}
    err_of: dict[int, float] = {}
    changed: dict[int, None] = {}  # rows a fold changed during this tick, in order

    def push_one(ra: int, cos: npt.NDArray[np.float32]) -> None:
        """`first_links([ra])`, lean: after each merge, for the absorber."""
        near = cos * coh
        near[ra] = -np.inf
        (cols,) = (near >= (thr - 1e-3) / coh[ra]).nonzero()
        if not cols.size:
            return
        # in slot order: a row's BLAS product depends on its place among the rows, and the
        # compact rows' order depends on the clusters' history (tested)
        cols = cols[np.argsort(live[cols])]
        one = (ls[live[cols]] @ ls[slot_l[ra]]) * inv_w[cols]
        one *= inv_w[ra]
        (hit,) = (one >= thr).nonzero()
        if not hit.size:
            return
        ca, va = cids[ra], ver[ra]
        for c, v in zip(cols[hit].tolist(), one[hit].tolist(), strict=True):
            cb = cids[c]
            if ca < cb:
                push(heap, (-v, ca, cb, va, ver[c], ra, c))
            else:
                push(heap, (-v, cb, ca, ver[c], va, c, ra))

    def first_links(rows_in: list[int]) -> None:
        # the float32 bound for every pair, then the exact average-link (float64 sums) of
        # each cluster against only those that can reach the threshold
        ri = np.asarray(rows_in, dtype=np.int64)
        gram = cent[ri] @ cent.T
        cos_of.update(zip(rows_in, gram, strict=True))
        err_of.update(dict.fromkeys(rows_in, COS_ERR))
        # the bound (gram * coh_c) * coh_r >= thr - 1e-3 is computed only where the cosine
        # itself can reach it (coh <= cmax), found by one float32 comparison and a flat
        # nonzero: over touched x live, two float64 passes and a 2-D nonzero cost ~2.5 ms
        # per tick at 250 x 3,200, and keep the same pairs in the same order
        cmax = float(coh.max())
        if cmax <= 0.0:
            return
        floor = np.float32((thr - 1e-3) / (cmax * cmax) * (1.0 - 1e-6))
        flat = np.flatnonzero(gram >= floor)
        r_, c_ = np.divmod(flat, live.size)
        bound = gram.ravel()[flat] * coh[c_]
        bound *= coh[ri[r_]]
        (sel,) = ((bound >= thr - 1e-3) & (c_ != ri[r_])).nonzero()
        r_, c_ = r_[sel], c_[sel]
        if not r_.size:
            return
        order = np.lexsort((live[c_], r_))  # each row's columns in slot order (as in push_one)
        r_, c_ = r_[order], c_[order]
        # one exact product per row, over exactly the columns its bound kept (the BLAS
        # result of a row depends on the set it is computed in); the scaling and the
        # threshold are elementwise, so they run once for all rows
        starts = np.flatnonzero(np.concatenate(([True], r_[1:] != r_[:-1]))).tolist()
        ends = [*starts[1:], r_.size]
        ra_of = ri[r_]
        sa_l = live[ra_of].tolist()
        sc = live[c_]
        dots = np.empty(r_.size)
        for lo, hi in zip(starts, ends, strict=True):
            dots[lo:hi] = ls[sc[lo:hi]] @ ls[sa_l[lo]]
        one = dots * inv_w[c_]
        one *= inv_w[ra_of]
        (hit,) = (one >= thr).nonzero()
        if not hit.size:
            return
        ra_h, c_h, v_h = ra_of[hit], c_[hit], one[hit]
        # a pair of two touched clusters comes once from each side, with links that may
        # differ in the last bits: the higher pops first, and whether it is stale or folds
        # the pair, the other is stale when it pops (same versions), so only the higher stays
        lo, hi = np.minimum(ra_h, c_h), np.maximum(ra_h, c_h)
        order = np.lexsort((-v_h, hi, lo))
        lo, hi = lo[order], hi[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
        keep = order[first]
        ras = ra_h[keep].tolist()
        cols_l = c_h[keep].tolist()
        vals = v_h[keep].tolist()
        # every version is 0 before the first fold; one heapify pops in the same order as
        # pushing the entries one by one (equal entries are indistinguishable)
        for ra, c, v in zip(ras, cols_l, vals, strict=True):
            ca, cb = cids[ra], cids[c]
            if ca < cb:
                heap.append((-v, ca, cb, 0, 0, ra, c))
            else:
                heap.append((-v, cb, ca, 0, 0, c, ra))
        heapq.heapify(heap)

    def absorber_cosines(
        plan: FoldPlan, na: float, nb: float, n: float, ra: int, rb: int
    ) -> npt.NDArray[np.float32] | None:
        """The absorber's cosines to every row from its parts', instead of a product with
        every live centroid after each fold (None when a part's are not known or their error
        bound has grown too large). Its sums are fa ls_a + fb ls_b, so its unit centroid is
        (fa |ls_a| c_a + fb |ls_b| c_b) / |ls_ab|, and so are its cosines, with the parts'
        errors weighted alike. Rows a fold changed during this tick are recomputed."""
        ca, cb = cos_of.get(ra), cos_of.get(rb)
        if ca is None or cb is None or n <= 0.0:
            return None
        alpha, beta = plan.fa * na / n, plan.fb * nb / n
        err = alpha * err_of[ra] + beta * err_of[rb] + 1e-6
        if err > MAX_COS_ERR:
            return None
        cos = ca * np.float32(alpha) + cb * np.float32(beta)
        if changed:
            rows = np.fromiter(changed, dtype=np.int64, count=len(changed))
            cos[rows] = cent[rows] @ cent[ra]
        err_of[ra] = err
        return cos

    first_links(row_of[touched].tolist())
    pop = heapq.heappop
    while heap:
        _, _, _, va, vb, ra, rb = pop(heap)
        if ver[ra] != va or ver[rb] != vb:
            continue
        plan = scope.fold_plan(slot_l[ra], slot_l[rb])
        absorber = plan.absorber
        if absorber != slot_l[ra]:
            ra, rb = rb, ra
        na, nb = float(scope.norm[absorber]), float(scope.norm[plan.absorbed])
        scope.apply_fold(plan, reason="average_link")
        ver[ra] += 1
        ver[rb] += 1
        inv_w[rb] = 0.0
        coh[rb] = 0.0
        inv_w[ra] = 1.0 / scope.w[absorber]
        coh[ra] = scope.norm[absorber] * inv_w[ra]
        cos = absorber_cosines(plan, na, nb, float(scope.norm[absorber]), ra, rb)
        if cos is None:
            cos, err_of[ra] = cent @ cent[ra], COS_ERR
        cos_of[ra] = cos
        cos_of.pop(rb, None)
        changed[ra] = None
        push_one(ra, cos)
