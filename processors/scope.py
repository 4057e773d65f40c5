"""One clustering space: the cluster table of a scope and the micro-batch assignment over it.

Cluster state is kept in slot arrays (a slot is reused after a cluster retires; a cluster id
never is). Each cluster holds a decayed linear sum `ls` and weight `w` referenced to the time
`tref` of its last activity (lazy decay: scaling both by the same factor leaves the centroid
and the mean vector ls/w unchanged, so decay is applied only when a cluster is touched).
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from river import drift

from processors.config import EngineConfig
from processors.facets import EMPTY, FacetCounts, Facets
from processors.search import knn_inner_product
from schemas.outputs import ChangeEvent, ChangeKind

log = logging.getLogger(__name__)

CANDIDATE, ACTIVE = 0, 1
STATUS_NAMES: tuple[Literal["candidate"], Literal["active"]] = ("candidate", "active")
_EVENT_NS = uuid.UUID("3f0e6b1c-3d4e-5a7b-9c8d-0e1f2a3b4c5d")
_LN2 = math.log(2.0)


@dataclass(slots=True)
class Member:
    document_id: str | None
    event_time: float
    facets: Facets


@dataclass(frozen=True, slots=True)
class ScopeKey:
    embedding_type: str
    embedding_model: str
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        extra = "".join(f"/{k}={v}" for k, v in self.fields)
        return f"{self.embedding_type}/{self.embedding_model}{extra}"


class ScopeState:
    """Cluster table and assignment of one scope. All times are event times (epoch s)."""

    def __init__(self, key: ScopeKey, dim: int, cfg: EngineConfig) -> None:
        self.key = key
        self.name = key.name
        self.dim = dim
        self.cfg = cfg
        digest = hashlib.sha1(self.name.encode()).hexdigest()[:8]
        self.prefix = f"{key.embedding_type}-{digest}"
        self.cap = 0
        self.n_used = 0
        self.free: list[int] = []
        self._grow(64)
        self.item_slot: dict[str, int] = {}
        self.slot_of: dict[int, int] = {}
        self.seq = 0
        self.watermark = -math.inf
        self.next_no = 1
        self.event_seq = 0
        self.touched: set[int] = set()
        self.dirty: set[int] = set()
        # membership changes since the last drain: item -> cluster number, -1 when it left
        # every cluster (retired, deleted). Adapters persist memberships from this log.
        self.moves: dict[str, int] = {}
        self.size_warned: set[int] = set()
        self.size_warnings = 0
        self.events: list[ChangeEvent] = []
        # one sample is already a block of items, so check every sample (clock=1)
        self.adwin = drift.ADWIN(delta=cfg.drift_delta, clock=1, grace_period=8)
        self.block_new = 0
        self.drift_pending = False
        self.drifts = 0
        self.items_since_recon = 0
        self.last_recon_time: float | None = None
        self.recon_runs = 0

    # ------------------------------------------------------------------ storage
    def _grow(self, cap: int) -> None:
        old = self.cap
        d, r = self.dim, self.cfg.reservoir_size

        def ext(
            a: npt.NDArray[Any] | None, shape: tuple[int, ...], dtype: Any, fill: Any = 0
        ) -> Any:
            new = np.full(shape, fill, dtype=dtype)
            if a is not None and old:
                new[:old] = a[:old]
            return new

        g = getattr
        self.ls = ext(g(self, "ls", None), (cap, d), np.float64)
        self.cent = ext(g(self, "cent", None), (cap, d), np.float32)
        self.w = ext(g(self, "w", None), (cap,), np.float64)
        self.tref = ext(g(self, "tref", None), (cap,), np.float64)
        self.norm = ext(g(self, "norm", None), (cap,), np.float64, 1.0)
        self.t_first = ext(g(self, "t_first", None), (cap,), np.float64)
        self.t_last = ext(g(self, "t_last", None), (cap,), np.float64)
        self.cid = ext(g(self, "cid", None), (cap,), np.int64, -1)
        self.status = ext(g(self, "status", None), (cap,), np.int8)
        self.res_vec = ext(g(self, "res_vec", None), (cap, r, d), np.float32)
        self.res_time = ext(g(self, "res_time", None), (cap, r), np.float64)
        self.res_next = ext(g(self, "res_next", None), (cap,), np.int64)
        self.res_ids: list[list[str | None]] = g(self, "res_ids", []) + [
            [None] * r for _ in range(cap - old)
        ]
        self.members: list[dict[str, Member]] = g(self, "members", []) + [
            {} for _ in range(cap - old)
        ]
        self.facets: list[FacetCounts] = g(self, "facets", []) + [
            FacetCounts() for _ in range(cap - old)
        ]
        self.free.extend(range(cap - 1, old - 1, -1))
        self.cap = cap

    def _alloc(self) -> int:
        if not self.free:
            self._grow(self.cap * 2)
        slot = self.free.pop()
        self.n_used = max(self.n_used, slot + 1)
        return slot

    def _release(self, slot: int) -> None:
        for item in self.members[slot]:
            self.item_slot.pop(item, None)
            self.moves[item] = -1
        self.slot_of.pop(int(self.cid[slot]), None)
        self.members[slot] = {}
        self.facets[slot] = FacetCounts()
        self.res_ids[slot] = [None] * self.cfg.reservoir_size
        self.res_next[slot] = 0
        self.ls[slot] = 0.0
        self.cent[slot] = 0.0
        self.w[slot] = 0.0
        self.cid[slot] = -1
        self.touched.discard(slot)
        self.dirty.discard(slot)
        self.free.append(slot)
        while self.n_used and self.cid[self.n_used - 1] < 0:
            self.n_used -= 1
        if self.free and len(self.free) > 1 and self.free[-1] > self.n_used:
            # keep the lowest free slots on top so the live matrix stays compact
            self.free.sort(reverse=True)

    def cluster_id(self, slot: int) -> str:
        return self.cluster_name(int(self.cid[slot]))

    def cluster_name(self, number: int) -> str:
        return f"{self.prefix}-{number:06d}"

    def slot_for(self, cluster_id: str) -> int | None:
        """The slot of a live cluster of this scope by its id; None when it is gone."""
        head, _, number = cluster_id.rpartition("-")
        if head != self.prefix or not number.isdigit():
            return None
        return self.slot_of.get(int(number))

    def drain_moves(self) -> dict[str, int]:
        out, self.moves = self.moves, {}
        return out

    def live_slots(self) -> npt.NDArray[np.int64]:
        return np.nonzero(self.cid[: self.n_used] >= 0)[0]

    def weight_now(self, slots: npt.NDArray[np.int64], t: float) -> npt.NDArray[np.float64]:
        dt = np.maximum(t - self.tref[slots], 0.0)
        return np.asarray(self.w[slots] * np.exp(-_LN2 * dt / self.cfg.half_life_seconds))

    # ------------------------------------------------------------------ events
    def emit(
        self,
        kind: ChangeKind,
        slot: int,
        related: list[str] | None = None,
        moved: list[str] | None = None,
        reason: str = "",
        cluster_id: str | None = None,
    ) -> None:
        self.event_seq += 1
        cid = cluster_id or self.cluster_id(slot)
        eid = uuid.uuid5(_EVENT_NS, f"{self.name}|{self.event_seq}|{kind}|{cid}")
        self.events.append(
            ChangeEvent.model_construct(
                event_id=str(eid),
                kind=kind,
                scope=self.name,
                cluster_id=cid,
                related_ids=related or [],
                event_time=self.watermark,
                sequence=self.event_seq,
                size=len(self.members[slot]),
                weight=float(self.w[slot]),
                moved_item_ids=moved or [],
                reason=reason,
            )
        )

    # ------------------------------------------------------------------ mutation
    def open_cluster(self, x: npt.NDArray[np.float64], t: float, weight: float = 1.0) -> int:
        slot = self._alloc()
        self.cid[slot] = self.next_no
        self.slot_of[self.next_no] = slot
        self.next_no += 1
        self.ls[slot] = x * weight
        self.w[slot] = weight
        self.tref[slot] = t
        self.norm[slot] = float(np.linalg.norm(self.ls[slot]))
        self.cent[slot] = self.ls[slot] / self.norm[slot]
        self.t_first[slot] = t
        self.t_last[slot] = t
        self.status[slot] = CANDIDATE
        return slot

    def add_member(
        self,
        slot: int,
        x: npt.NDArray[np.float64],
        x32: npt.NDArray[np.float32],
        item: str,
        doc: str | None,
        t: float,
        facets: Facets,
        vector_weight: bool = True,
    ) -> float:
        """Record membership; when `vector_weight`, also fold x into the sums. Returns the
        factor the old linear sum was scaled by (negative: an additive update, see _fold)."""
        scale = 1.0
        if vector_weight:
            scale = self._fold(slot, x, t)
            self.cent[slot] = self.ls[slot] / self.norm[slot]
            self.dirty.discard(slot)
        self._record(slot, x32, item, doc, t, facets)
        return scale

    def _fold(self, slot: int, x: npt.NDArray[np.float64], t: float) -> float:
        """Fold x into the decayed sums. Returns the factor the old sum was scaled by, or minus
        the weight x entered with when x is older than the cluster (sum unscaled). The centroid
        row is refreshed later (`dirty`): only the next search reads it."""
        ls = self.ls[slot]
        tref = float(self.tref[slot])
        if t >= tref:
            scale = math.exp(-_LN2 * (t - tref) / self.cfg.half_life_seconds)
            ls *= scale
            ls += x
            self.w[slot] = self.w[slot] * scale + 1.0
            self.tref[slot] = t
        else:
            wt = math.exp(-_LN2 * (tref - t) / self.cfg.half_life_seconds)
            ls += wt * x
            self.w[slot] += wt
            scale = -wt
        self.norm[slot] = math.sqrt(float(ls @ ls))
        self.dirty.add(slot)
        return scale

    def _record(
        self,
        slot: int,
        x32: npt.NDArray[np.float32],
        item: str,
        doc: str | None,
        t: float,
        facets: Facets,
    ) -> None:
        if t < self.t_first[slot]:
            self.t_first[slot] = t
        if t > self.t_last[slot]:
            self.t_last[slot] = t
        mem = self.members[slot]
        mem[item] = Member(doc, t, facets)
        self.item_slot[item] = slot
        self.moves[item] = int(self.cid[slot])
        pos = int(self.res_next[slot]) % self.cfg.reservoir_size
        self.res_vec[slot, pos] = x32
        self.res_time[slot, pos] = t
        self.res_ids[slot][pos] = item
        self.res_next[slot] += 1
        if facets is not EMPTY:
            self.facets[slot].add(facets)
        self.touched.add(slot)
        if len(mem) > self.cfg.size_warning and int(self.cid[slot]) not in self.size_warned:
            self.size_warned.add(int(self.cid[slot]))
            self.size_warnings += 1
            log.warning(
                "cluster %s in scope %s passed %d members",
                self.cluster_id(slot),
                self.name,
                self.cfg.size_warning,
            )
        if self.status[slot] == CANDIDATE and self.w[slot] >= self.cfg.min_weight:
            self.status[slot] = ACTIVE
            self.emit("created", slot)

    def refresh_centroids(self) -> None:
        """Bring the centroid rows of clusters folded into since the last call up to date."""
        if self.dirty:
            rows = np.fromiter(self.dirty, dtype=np.int64, count=len(self.dirty))
            self.dirty.clear()
            rows = rows[self.cid[rows] >= 0]
            self.cent[rows] = self.ls[rows] / self.norm[rows, None]

    # ------------------------------------------------------------------ assignment
    def assign(
        self,
        x32: npt.NDArray[np.float32],
        items: list[str],
        docs: list[str | None],
        times: npt.NDArray[np.float64],
        facets: list[Facets],
        out_slot_cid: npt.NDArray[np.int64],
        out_sim: npt.NDArray[np.float64],
        out_new: npt.NDArray[np.bool_],
        out_status: npt.NDArray[np.int8],
    ) -> None:
        """Assign a segment of items, in order, with exactly the result of one-by-one
        processing: one FAISS search for the segment gives candidates; moves of centroids
        inside the segment are tracked through the segment's Gram matrix."""
        cfg = self.cfg
        b = x32.shape[0]
        thr, tau, k = cfg.assign_threshold, cfg.tau_seconds, cfg.search_k
        x64 = x32.astype(np.float64)
        n_live = len(self.slot_of)
        if self.n_used:
            dist, idx = knn_inner_product(x32, self.cent[: self.n_used], k)
            cand = np.unique(idx[idx >= 0])
            cand = cand[self.cid[cand] >= 0]
            cand = cand[np.argsort(self.cid[cand], kind="stable")]
            if n_live > k:
                bound = dist[:, -1].astype(np.float64) + 1e-6
            else:
                bound = np.full(b, -math.inf)
        else:
            cand = np.zeros(0, dtype=np.int64)
            bound = np.full(b, -math.inf)
        nc0 = cand.shape[0]
        width = nc0 + 2 * b  # each item adds at most a fallback column and a new one
        cols = np.full(width, -1, dtype=np.int64)
        cols[:nc0] = cand
        acc = np.empty((b, width))
        score = np.full((b, width), -math.inf)
        gram = x64 @ x64.T
        if nc0:
            acc[:, :nc0] = x64 @ self.ls[cand].T
            score[:, :nc0] = (acc[:, :nc0] / self.norm[cand]) * np.exp(
                -np.abs(times[:, None] - self.tref[cand][None, :]) / tau
            )
        col_of = {int(s): j for j, s in enumerate(cand)}
        # time weights between items of the segment: a cluster an item joins (or opens) takes
        # that item's time as its reference, so its column of scores reuses this matrix
        tw = np.exp(-np.abs(times[:, None] - times[None, :]) / tau)
        ncols = nc0
        ls, norm, tref = self.ls, self.norm, self.tref
        for i in range(b):
            t = float(times[i])
            if t > self.watermark:
                self.watermark = t
            if ncols:
                j = int(score[i, :ncols].argmax())
                best = float(score[i, j])
            else:
                j, best = -1, -math.inf
            if best < bound[i] and bound[i] >= thr:
                j, best, ncols = self._exact_best(i, x64, times, acc, score, cols, col_of, ncols)
            xi = x64[i]
            if j >= 0:
                # the running scores pick the cluster; its score is recomputed from the current
                # state so that decisions and reported values do not depend on the batching
                s0 = int(cols[j])
                best = float(xi @ ls[s0]) / norm[s0] * math.exp(-abs(t - tref[s0]) / tau)
            rest = slice(i + 1, b)
            if best >= thr:
                slot = int(cols[j])
                scale = self._fold(slot, xi, t)
                self._record(slot, x32[i], items[i], docs[i], t, facets[i])
                if scale >= 0:
                    col = acc[rest, j]
                    col *= scale
                    col += gram[rest, i]
                    score[rest, j] = col * (tw[rest, i] / norm[slot])
                else:
                    acc[rest, j] += -scale * gram[rest, i]
                    score[rest, j] = (acc[rest, j] / norm[slot]) * np.exp(
                        -np.abs(times[rest] - tref[slot]) / tau
                    )
                out_new[i] = False
                out_sim[i] = best
            else:
                slot = self.open_cluster(xi, t)
                ls, norm, tref = self.ls, self.norm, self.tref  # the arrays may have grown
                self._record(slot, x32[i], items[i], docs[i], t, facets[i])
                j = ncols
                cols[j] = slot
                col_of[slot] = j
                w0 = float(self.w[slot])
                acc[rest, j] = gram[rest, i] * w0
                score[rest, j] = gram[rest, i] * (w0 / norm[slot]) * tw[rest, i]
                ncols += 1
                out_new[i] = True
                out_sim[i] = 1.0
                self.block_new += 1
            out_slot_cid[i] = self.cid[slot]
            out_status[i] = self.status[slot]
            self.seq += 1
            self.items_since_recon += 1
            if self.seq % cfg.drift_block == 0:
                self._drift_sample()
        self.refresh_centroids()

    def _exact_best(
        self,
        i: int,
        x64: npt.NDArray[np.float64],
        times: npt.NDArray[np.float64],
        acc: npt.NDArray[np.float64],
        score: npt.NDArray[np.float64],
        cols: npt.NDArray[np.int64],
        col_of: dict[int, int],
        ncols: int,
    ) -> tuple[int, float, int]:
        """Rare path: every candidate of the FAISS search moved away inside the segment, so a
        cluster outside the candidates might now be best. Score all live clusters exactly."""
        live = self.live_slots()
        sims = (self.ls[live] @ x64[i]) / self.norm[live]
        w = np.exp(-np.abs(times[i] - self.tref[live]) / self.cfg.tau_seconds)
        sc = sims * w
        order = np.lexsort((self.cid[live], -sc))
        slot = int(live[order[0]])
        best = float(sc[order[0]])
        if slot not in col_of:
            j = ncols
            cols[j] = slot
            col_of[slot] = j
            acc[:, j] = x64 @ self.ls[slot]
            score[:, j] = (acc[:, j] / self.norm[slot]) * np.exp(
                -np.abs(times - self.tref[slot]) / self.cfg.tau_seconds
            )
            ncols += 1
        return col_of[slot], best, ncols

    def _drift_sample(self) -> None:
        rate = self.block_new / self.cfg.drift_block
        self.block_new = 0
        self.adwin.update(rate)
        if self.adwin.drift_detected:
            self.drift_pending = True
            self.drifts += 1
