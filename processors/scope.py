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
from processors.kernels import assign_segment
from processors.search import knn_inner_product
from schemas.outputs import ChangeEvent, ChangeKind

log = logging.getLogger(__name__)

CANDIDATE, ACTIVE = 0, 1
STATUS_NAMES: tuple[Literal["candidate"], Literal["active"]] = ("candidate", "active")
_EVENT_NS = uuid.UUID("3f0e6b1c-3d4e-5a7b-9c8d-0e1f2a3b4c5d")
_LN2 = math.log(2.0)
_NS_BYTES = _EVENT_NS.bytes


def uuid5_str(name: str) -> str:
    """str(uuid.uuid5(_EVENT_NS, name)) without building UUID objects (hot path)."""
    h = bytearray(hashlib.sha1(_NS_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


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
        self.last_tick_time: float | None = None  # event time of the last maintenance
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
        # a started reconsolidation: (job, item position at which it is applied)
        self.pending_recon: tuple[Any, int] | None = None

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
        weight: float | None = None,
    ) -> None:
        self.event_seq += 1
        cid = cluster_id or self.cluster_id(slot)
        eid = uuid5_str(f"{self.name}|{self.event_seq}|{kind}|{cid}")
        self.events.append(
            ChangeEvent.model_construct(
                event_id=eid,
                kind=kind,
                scope=self.name,
                cluster_id=cid,
                related_ids=related or [],
                event_time=self.watermark,
                sequence=self.event_seq,
                size=len(self.members[slot]),
                weight=float(self.w[slot]) if weight is None else weight,
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

    def record_member(
        self,
        slot: int,
        x32: npt.NDArray[np.float32],
        item: str,
        doc: str | None,
        t: float,
        facets: Facets,
    ) -> None:
        """Membership bookkeeping of one item whose vector is already in the cluster's sums
        (a split moving members); assignment records whole segments (`_record_segment`)."""
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
            self._warn_size(slot)
        if self.status[slot] == CANDIDATE and self.w[slot] >= self.cfg.min_weight:
            self.status[slot] = ACTIVE
            self.emit("created", slot)

    def _warn_size(self, slot: int) -> None:
        self.size_warned.add(int(self.cid[slot]))
        self.size_warnings += 1
        log.warning(
            "cluster %s in scope %s passed %d members",
            self.cluster_id(slot),
            self.name,
            self.cfg.size_warning,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Checkpoints written before a field existed load with that field's start value
        (a rolling upgrade must not turn stored checkpoints into a crash loop)."""
        state.setdefault("last_tick_time", None)
        self.__dict__.update(state)

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
            dist, idx = knn_inner_product(
                x32, self.cent[: self.n_used], k, cfg.search_threads, cfg.search_backend
            )
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
        # time weights between items of the segment: a cluster an item joins (or opens) takes
        # that item's time as its reference, so its column of scores reuses this matrix
        tw = np.exp(-np.abs(times[:, None] - times[None, :]) / tau)
        # slots for clusters the segment may open, taken in the order _alloc would give them
        while len(self.free) < b:
            self._grow(self.cap * 2)
        new_slots = np.array([self.free.pop() for _ in range(b)], dtype=np.int64)
        col_of = np.full(self.cap, -1, dtype=np.int64)
        col_of[cand] = np.arange(nc0)
        slots = np.empty(b, dtype=np.int64)
        w_after = np.empty(b)
        opened, self.n_used = assign_segment(
            x64, np.ascontiguousarray(times, dtype=np.float64), gram, tw, acc, score, cols,
            col_of, nc0, bound, self.ls, self.w, self.tref, self.norm, self.cid, self.t_first,
            self.t_last, self.n_used, new_slots, self.next_no, thr, tau,
            cfg.half_life_seconds, slots, out_sim, out_new, w_after,
        )  # fmt: skip
        self.free.extend(new_slots[opened:][::-1].tolist())
        for s in new_slots[:opened].tolist():
            self.slot_of[self.next_no] = s
            self.next_no += 1
            self.status[s] = CANDIDATE
        self._record_segment(slots, x32, items, docs, times, facets, w_after, out_new, out_status)
        out_slot_cid[:] = self.cid[slots]
        self.refresh_centroids()

    def _record_segment(
        self,
        slots: npt.NDArray[np.int64],
        x32: npt.NDArray[np.float32],
        items: list[str],
        docs: list[str | None],
        times: npt.NDArray[np.float64],
        facets: list[Facets],
        w_after: npt.NDArray[np.float64],
        is_new: npt.NDArray[np.bool_],
        out_status: npt.NDArray[np.int8],
    ) -> None:
        """`record_member` for a whole segment, in item order (the same effects, fewer numpy calls):
        memberships, reservoir rings, facets, promotions (`created`), drift samples."""
        cfg = self.cfg
        r = cfg.reservoir_size
        members, item_slot, moves = self.members, self.item_slot, self.moves
        cid, status, res_ids = self.cid, self.status, self.res_ids
        ring: dict[int, int] = {}  # slot -> next ring position, as of this segment
        res_rows: dict[tuple[int, int], int] = {}  # (slot, pos) -> item row; last write wins
        min_w, warn_at = cfg.min_weight, cfg.size_warning
        for i, slot in enumerate(slots.tolist()):
            t = float(times[i])
            if t > self.watermark:
                self.watermark = t
            item = items[i]
            mem = members[slot]
            mem[item] = Member(docs[i], t, facets[i])
            item_slot[item] = slot
            moves[item] = int(cid[slot])
            pos = ring.get(slot)
            if pos is None:
                pos = int(self.res_next[slot])
            res_rows[(slot, pos % r)] = i
            res_ids[slot][pos % r] = item
            ring[slot] = pos + 1
            if facets[i] is not EMPTY:
                self.facets[slot].add(facets[i])
            if len(mem) > warn_at and int(cid[slot]) not in self.size_warned:
                self._warn_size(slot)
            if status[slot] == CANDIDATE and w_after[i] >= min_w:
                status[slot] = ACTIVE
                self.emit("created", slot, weight=float(w_after[i]))
            out_status[i] = status[slot]
            if is_new[i]:
                self.block_new += 1
            self.seq += 1
            self.items_since_recon += 1
            if self.seq % cfg.drift_block == 0:
                self._drift_sample()
        touched = list(ring)
        self.touched.update(touched)
        self.dirty.update(touched)
        self.res_next[touched] = [ring[sl] for sl in touched]
        if res_rows:
            keys = list(res_rows)
            rows = np.fromiter(res_rows.values(), dtype=np.int64, count=len(keys))
            ks = np.array(keys, dtype=np.int64)
            self.res_vec[ks[:, 0], ks[:, 1]] = x32[rows]
            self.res_time[ks[:, 0], ks[:, 1]] = times[rows]
        np.minimum.at(self.t_first, slots, times)
        np.maximum.at(self.t_last, slots, times)

    def _drift_sample(self) -> None:
        rate = self.block_new / self.cfg.drift_block
        self.block_new = 0
        self.adwin.update(rate)
        if self.adwin.drift_detected:
            self.drift_pending = True
            self.drifts += 1
