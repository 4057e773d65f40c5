"""The sequential core of assignment, compiled with numba.

Items of a segment must be decided one after the other (each join moves a centroid that the
next item sees), so this loop cannot be one matrix operation. In Python it cost ~25 us per
item; compiled it is about 1 us plus O(segment) column updates. Only numbers live here:
memberships, reservoirs and events are recorded afterwards by `ScopeState` in item order.

The kernel mutates the scope's arrays (ls, w, tref, norm, cid, t_first, t_last) in place.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

from processors.decay import decay_factor_jit

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@numba.njit(cache=True, nogil=True)
def _dot(a: F64, b: F64) -> float:  # pragma: no cover - compiled
    s = 0.0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@numba.njit(cache=True, nogil=True)
def _dot4(a: F64, b: F64) -> float:  # pragma: no cover - compiled
    """A dot product with four running sums (vectorisable without fast-math): for the
    tracked scores, which only rank candidates; decisions use `_dot`."""
    n = a.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    m = n - n % 4
    for k in range(0, m, 4):
        s0 += a[k] * b[k]
        s1 += a[k + 1] * b[k + 1]
        s2 += a[k + 2] * b[k + 2]
        s3 += a[k + 3] * b[k + 3]
    for k in range(m, n):
        s0 += a[k] * b[k]
    return (s0 + s1) + (s2 + s3)


@numba.njit(cache=True, nogil=True)
def _initial_scores(  # pragma: no cover - compiled
    x64: F64,
    times: F64,
    near: I64,
    cols: I64,
    col_of: I64,
    nc0: int,
    ls: F64,
    norm: F64,
    tref: F64,
    tau: float,
    acc: F64,
    score: F64,
) -> None:
    """Each item's tracked entries at segment start: its nearest centroids only. The pairs
    are taken column by column, so each candidate's row of sums (float64, read from a
    table far larger than the caches at scale) is read once per segment."""
    b, k = near.shape
    start = np.zeros(nc0 + 1, dtype=np.int64)
    for r in range(b):
        for q in range(k):
            s = near[r, q]
            if s >= 0 and col_of[s] >= 0:
                start[col_of[s] + 1] += 1
    for c in range(nc0):
        start[c + 1] += start[c]
    fill = start[:nc0].copy()
    rows = np.empty(start[nc0], dtype=np.int64)
    for r in range(b):
        for q in range(k):
            s = near[r, q]
            if s >= 0 and col_of[s] >= 0:
                c = col_of[s]
                rows[fill[c]] = r
                fill[c] += 1
    for c in range(nc0):
        s = cols[c]
        for e in range(start[c], start[c + 1]):
            r = rows[e]
            a = _dot4(x64[r], ls[s])
            acc[r, c] = a
            score[r, c] = (a / norm[s]) * math.exp(-abs(times[r] - tref[s]) / tau)


@numba.njit(cache=True, nogil=True)
def assign_segment(  # pragma: no cover - compiled; covered through ScopeState.assign tests
    x64: F64,
    times: F64,
    gram: F64,
    tw: F64,
    acc: F64,
    score: F64,
    cols: I64,
    col_of: I64,
    nc0: int,
    near: I64,
    bound: F64,
    ls: F64,
    w: F64,
    tref: F64,
    norm: F64,
    cid: I64,
    t_first: F64,
    t_last: F64,
    n_used: int,
    new_slots: I64,
    next_no: int,
    thr: float,
    tau: float,
    half_life: float,
    out_slot: I64,
    out_sim: F64,
    out_new: npt.NDArray[np.bool_],
    out_w: F64,
) -> tuple[int, int]:
    """Decide every item of the segment in order. The first `nc0` columns are the candidate
    slots `cols` (the union of the items' nearest centroids `near`, -1 for none). Item r's
    entries of `acc`/`score` (x_r . ls_c and its time-weighted score) are tracked only for
    its own nearest centroids and for clusters joined or opened earlier in the segment
    (`score` -inf: untracked): any other column is a static centroid scoring at most the
    item's k-th nearest cosine (`bound`), which the fallback below covers, so the decisions
    are those of tracking every column, at O(k) products per item instead of O(columns).
    Returns (new clusters opened, n_used)."""
    b = x64.shape[0]
    ncols = nc0
    opened = 0
    tracked = np.zeros(cols.shape[0], dtype=np.bool_)  # every row from here on
    _initial_scores(x64, times, near, cols, col_of, nc0, ls, norm, tref, tau, acc, score)
    for i in range(b):
        t = times[i]
        j = -1
        best = -np.inf
        for c in range(ncols):
            if score[i, c] > best:
                best = score[i, c]
                j = c
        if best < bound[i] and bound[i] >= thr:
            # every FAISS candidate moved away inside the segment: score all live clusters
            bslot = -1
            bs = -np.inf
            for s in range(n_used):
                if cid[s] < 0:
                    continue
                sc = _dot(ls[s], x64[i]) / norm[s] * math.exp(-abs(t - tref[s]) / tau)
                if bslot < 0 or sc > bs or (sc == bs and cid[s] < cid[bslot]):
                    bs = sc
                    bslot = s
            if col_of[bslot] < 0:
                jj = ncols
                cols[jj] = bslot
                col_of[bslot] = jj
                for r in range(b):
                    acc[r, jj] = _dot(x64[r], ls[bslot])
                    score[r, jj] = (acc[r, jj] / norm[bslot]) * math.exp(
                        -abs(times[r] - tref[bslot]) / tau
                    )
                tracked[jj] = True
                ncols += 1
            j = col_of[bslot]
            best = bs
        if j >= 0:
            # the running scores pick the cluster; its score is recomputed from the current
            # state so that decisions and reported values do not depend on the batching
            s0 = cols[j]
            best = _dot(x64[i], ls[s0]) / norm[s0] * math.exp(-abs(t - tref[s0]) / tau)
        if best >= thr:
            slot = cols[j]
            if i + 1 < b and not tracked[j]:
                # rows not yet tracked in this column start from the cluster before this join
                fill = np.dot(x64[i + 1 :], ls[slot])
                for r in range(i + 1, b):
                    if score[r, j] == -np.inf:
                        acc[r, j] = fill[r - i - 1]
                tracked[j] = True
            r0 = tref[slot]
            if t >= r0:
                scale = decay_factor_jit(t - r0, half_life)
                for k in range(ls.shape[1]):
                    ls[slot, k] = ls[slot, k] * scale + x64[i, k]
                w[slot] = w[slot] * scale + 1.0
                tref[slot] = t
            else:
                wt = decay_factor_jit(r0 - t, half_life)
                for k in range(ls.shape[1]):
                    ls[slot, k] += wt * x64[i, k]
                w[slot] += wt
                scale = -wt
            norm[slot] = math.sqrt(_dot(ls[slot], ls[slot]))
            if scale >= 0:
                for r in range(i + 1, b):
                    acc[r, j] = acc[r, j] * scale + gram[r, i]
                    score[r, j] = acc[r, j] * (tw[r, i] / norm[slot])
            else:
                for r in range(i + 1, b):
                    acc[r, j] += -scale * gram[r, i]
                    score[r, j] = (acc[r, j] / norm[slot]) * math.exp(
                        -abs(times[r] - tref[slot]) / tau
                    )
            out_new[i] = False
            out_sim[i] = best
        else:
            slot = new_slots[opened]
            cid[slot] = next_no + opened
            opened += 1
            if slot + 1 > n_used:
                n_used = slot + 1
            for k in range(ls.shape[1]):
                ls[slot, k] = x64[i, k]
            w[slot] = 1.0
            tref[slot] = t
            norm[slot] = math.sqrt(_dot(ls[slot], ls[slot]))
            t_first[slot] = t
            t_last[slot] = t
            j = ncols
            cols[j] = slot
            col_of[slot] = j
            w0 = w[slot]
            for r in range(i + 1, b):
                acc[r, j] = gram[r, i] * w0
                score[r, j] = gram[r, i] * (w0 / norm[slot]) * tw[r, i]
            tracked[j] = True
            ncols += 1
            out_new[i] = True
            out_sim[i] = 1.0
        out_slot[i] = slot
        out_w[i] = w[slot]
    return opened, n_used
