"""One clustering space: the cluster table of a scope and the micro-batch assignment over it.

Cluster state is kept in slot arrays (a slot is reused after a cluster retires; a cluster id
never is). Each cluster holds a decayed linear sum `ls` and weight `w` referenced to the time
`tref` of its last activity (lazy decay: scaling both by the same factor leaves the centroid
and the mean vector ls/w unchanged, so decay is applied only when a cluster is touched).
The unit centroids are the one exception to the slot layout: they live compact, one row per
live cluster (`processors.centroids`), because every segment searches them all.

This class is the only writer of those tables: assignment (`assign`), folding one cluster
into another (`fold`), splitting parts out of one (`unfold`), removing a member (`remove`)
and retiring a cluster (`retire`) all live here, so the invariants between the arrays, the
member dicts, the reservoirs and the id maps are kept in one place. `lifecycle` and
`reconsolidate` decide *what* happens (which pair merges, which split passes its guard) and
call these methods; `export`/`restore` turn the live part of the tables into arrays for
checkpoints (processors/checkpoint.py).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from river import drift

from processors.centroids import LiveCentroids
from processors.config import EngineConfig
from processors.decay import decay_factor, decay_factors
from processors.facets import EMPTY, FacetCounts, Facets
from processors.kernels import assign_segment
from processors.search import knn_inner_product
from schemas.errors import CheckpointError
from schemas.outputs import ChangeEvent, ChangeKind

CANDIDATE, ACTIVE = 0, 1
STATUS_NAMES: tuple[Literal["candidate"], Literal["active"]] = ("candidate", "active")
_EVENT_NS = uuid.UUID("3f0e6b1c-3d4e-5a7b-9c8d-0e1f2a3b4c5d")
_NS_BYTES = _EVENT_NS.bytes


_NAME_CACHE = 1 << 16
_EVENT_FIELDS = frozenset(ChangeEvent.model_fields)


def change_event(values: dict[str, Any]) -> ChangeEvent:
    """A `ChangeEvent` from already valid values, with every field given: what
    `model_construct` builds (same fields, fields-set, no extra, no private state; tested
    equal), at a fifth of its cost, which was ~8 us per event on the merge path."""
    ev = ChangeEvent.__new__(ChangeEvent)
    _set = object.__setattr__
    _set(ev, "__dict__", values)
    _set(ev, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    _set(ev, "__pydantic_extra__", None)
    _set(ev, "__pydantic_private__", None)
    return ev


def uuid5_str(name: str) -> str:
    """str(uuid.uuid5(_EVENT_NS, name)) without building UUID objects (hot path)."""
    h = bytearray(hashlib.sha1(_NS_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _tags(row: list[Any]) -> tuple[tuple[str, str], ...]:
    """The tags of a checkpoint's facet-table row (none in format 1)."""
    return tuple((k, v) for k, v in row[4]) if len(row) > 4 else ()


Member = tuple[str | None, float, Facets]
"""A held item: (document id, event time, facets), read through `DOC`, `TIME`, `FACETS`.

A plain tuple of strings, a float and a `Facets` tuple, not a class: the cyclic collector
stops tracking such a tuple in one of its first passes, and a cluster's member dictionary in
the next full pass. Full passes hold the GIL, stalling the worker's loop and committer; they
no longer walk one object per held item (tests/processors/test_scope.py)."""
DOC: Final = 0
TIME: Final = 1
FACETS: Final = 2


class FoldPlan(NamedTuple):
    """One cluster folded into another: absorber sums = fa x its own + fb x the absorbed's
    (each decayed to the later of their reference times, `t`), of weight `weight`."""

    absorber: int
    absorbed: int
    fa: float
    fb: float
    weight: float
    t: float


@dataclass(frozen=True, slots=True)
class ScopeKey:
    embedding_type: str
    embedding_model: str
    fields: tuple[tuple[str, str], ...] = ()
    name: str = field(init=False, repr=False, compare=False)
    """built once: the router keys every event by it"""

    def __post_init__(self) -> None:
        extra = "".join(f"/{k}={v}" for k, v in self.fields)
        object.__setattr__(self, "name", f"{self.embedding_type}/{self.embedding_model}{extra}")


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
        self.centroids = LiveCentroids(dim)
        self._grow(64)
        self.item_slot: dict[str, int] = {}
        self.slot_of: dict[int, int] = {}
        self._names: dict[int, str] = {}  # cluster number -> id, a cache (hot: every item)
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
        self.size_warned: set[int] = set()  # live clusters past cfg.size_warning members
        self.size_warnings = 0
        self.new_size_warnings: list[str] = []  # cluster ids since the last drain
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
        self.centroids.grow(cap)
        self.free.extend(range(cap - 1, old - 1, -1))
        self.cap = cap

    def _alloc(self) -> int:
        if not self.free:
            self._grow(self.cap * 2)
        slot = self.free.pop()
        self.n_used = max(self.n_used, slot + 1)
        return slot

    def _release(self, slot: int) -> None:
        mem = self.members[slot]
        if mem:
            item_slot, moves = self.item_slot, self.moves
            for item in mem:
                item_slot.pop(item, None)
                moves[item] = -1
            self.members[slot] = {}
        no = int(self.cid[slot])
        self.slot_of.pop(no, None)
        self.size_warned.discard(no)
        if not self.facets[slot].empty():
            self.facets[slot] = FacetCounts()
        self.res_ids[slot] = [None] * self.cfg.reservoir_size
        self.res_next[slot] = 0
        self.ls[slot] = 0.0
        self.centroids.drop(slot)
        self.w[slot] = 0.0
        self.cid[slot] = -1
        self.touched.discard(slot)
        self.dirty.discard(slot)
        free = self.free
        free.append(slot)
        cid = self.cid
        while self.n_used and cid[self.n_used - 1] < 0:
            self.n_used -= 1
        if len(free) > 1 and free[-1] > self.n_used:
            # keep the lowest free slots on top so the live matrix stays compact
            free.sort(reverse=True)

    def cluster_id(self, slot: int) -> str:
        return self.cluster_name(int(self.cid[slot]))

    def cluster_name(self, number: int) -> str:
        name = self._names.get(number)
        if name is None:
            name = self._new_name(number)
        return name

    def cluster_names(self, numbers: list[int]) -> list[str]:
        get = self._names.get
        return [get(no) or self._new_name(no) for no in numbers]

    def _new_name(self, number: int) -> str:
        names = self._names
        if len(names) >= _NAME_CACHE:
            names.clear()  # ids of retired clusters would otherwise pile up
        name = names[number] = f"{self.prefix}-{number:06d}"
        return name

    def slot_for(self, cluster_id: str) -> int | None:
        """The slot of a live cluster of this scope by its id; None when it is gone."""
        head, _, number = cluster_id.rpartition("-")
        if head != self.prefix or not number.isdigit():
            return None
        return self.slot_of.get(int(number))

    def drain_moves(self) -> dict[str, int]:
        """Membership changes since the last drain: item -> cluster number, -1 when the
        item left every cluster. The engine turns them into `Move`s of its results."""
        out, self.moves = self.moves, {}
        return out

    def drain_size_warnings(self) -> list[str]:
        out, self.new_size_warnings = self.new_size_warnings, []
        return out

    def live_slots(self) -> npt.NDArray[np.int64]:
        return np.nonzero(self.cid[: self.n_used] >= 0)[0]

    def weight_now(self, slots: npt.NDArray[np.int64], t: float) -> npt.NDArray[np.float64]:
        dt = np.maximum(t - self.tref[slots], 0.0)
        return np.asarray(self.w[slots] * decay_factors(dt, self.cfg.half_life_seconds))

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
            change_event(
                {
                    "event_id": eid,
                    "kind": kind,
                    "scope": self.name,
                    "cluster_id": cid,
                    "related_ids": related or [],
                    "event_time": self.watermark,
                    "sequence": self.event_seq,
                    "size": len(self.members[slot]),
                    "weight": float(self.w[slot]) if weight is None else weight,
                    "moved_item_ids": moved or [],
                    "reason": reason,
                }
            )
        )

    # ------------------------------------------------------------------ mutation
    def _open_cluster(self, x: npt.NDArray[np.float64], t: float, weight: float = 1.0) -> int:
        slot = self._alloc()
        self.cid[slot] = self.next_no
        self.slot_of[self.next_no] = slot
        self.next_no += 1
        self.ls[slot] = x * weight
        self.w[slot] = weight
        self.tref[slot] = t
        self.norm[slot] = float(np.linalg.norm(self.ls[slot]))
        self.centroids.put(slot, self.ls[slot] / self.norm[slot])
        self.t_first[slot] = t
        self.t_last[slot] = t
        self.status[slot] = CANDIDATE
        return slot

    def _record_member(
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
        mem[item] = (doc, t, facets)
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
        """Counted, not logged: adapters report them aggregated (one line, a metric)."""
        self.size_warned.add(int(self.cid[slot]))
        self.size_warnings += 1
        self.new_size_warnings.append(self.cluster_id(slot))

    def retire(self, slot: int, reason: str) -> None:
        """The cluster leaves the index with a `retired` event; its members leave memory."""
        self.emit("retired", slot, reason=reason)
        self._release(slot)

    def fold(self, a: int, b: int, reason: str) -> int:
        """Fold the lighter cluster into the heavier (older id on equal weight); returns the
        absorber's slot. The absorbed id ends with a `merged` event naming it."""
        return self.apply_fold(self.fold_plan(a, b), reason)

    def fold_plan(self, a: int, b: int) -> FoldPlan:
        """What `fold(a, b)` will do, without doing it: the merge links derive the
        absorber's cosines from its parts' (`lifecycle`)."""
        w, cid = self.w, self.cid
        ta, tb = float(self.tref[a]), float(self.tref[b])
        t = max(ta, tb)
        hl = self.cfg.half_life_seconds
        wa0, wb0 = float(w[a]), float(w[b])
        wa = wa0 * decay_factor(t - ta, hl)
        wb = wb0 * decay_factor(t - tb, hl)
        if (wb, -int(cid[b])) > (wa, -int(cid[a])):
            a, b = b, a
            wa, wb = wb, wa
            wa0, wb0 = wb0, wa0
        fa = wa / wa0 if wa0 else 0.0
        fb = wb / wb0 if wb0 else 0.0
        return FoldPlan(a, b, fa, fb, wa + wb, t)

    def apply_fold(self, plan: FoldPlan, reason: str) -> int:
        """`fold`, as planned by `fold_plan` (nothing may change the two clusters between)."""
        a, b, fa, fb = plan.absorber, plan.absorbed, plan.fa, plan.fb
        w, ls, cid, status = self.w, self.ls, self.cid, self.status
        t = plan.t
        ls[a] = ls[a] * fa + ls[b] * fb
        w[a] = plan.weight
        self.tref[a] = t
        la = ls[a]
        n = math.sqrt(float(la @ la))
        self.norm[a] = n
        self.centroids.put(a, la / n if n > 0 else np.zeros_like(la))
        if self.t_first[b] < self.t_first[a]:
            self.t_first[a] = self.t_first[b]
        if self.t_last[b] > self.t_last[a]:
            self.t_last[a] = self.t_last[b]
        moved = self.members[b]
        if moved:
            self.members[a].update(moved)
            self.item_slot.update(dict.fromkeys(moved, a))
            self.moves.update(dict.fromkeys(moved, int(cid[a])))
            self.members[b] = {}
        fb_counts = self.facets[b]
        if not fb_counts.empty():
            self.facets[a].absorb(fb_counts)
        self._fold_reservoirs(a, b)
        absorbed_id = self.cluster_id(b)
        was_active = status[a] == ACTIVE
        if status[b] == ACTIVE or w[a] >= self.cfg.min_weight:
            status[a] = ACTIVE
        self.emit("merged", a, related=[absorbed_id], reason=reason)
        if not was_active and status[a] == ACTIVE:
            self.emit("created", a)
        self._release(b)
        self.touched.add(a)
        return a

    def _fold_reservoirs(self, a: int, b: int) -> None:
        """The newest members of both rings, oldest first (the next write replaces it)."""
        r = self.cfg.reservoir_size
        res_time, res_vec, res_ids = self.res_time, self.res_vec, self.res_ids
        ids = res_ids[a] + res_ids[b]
        ts = res_time[a].tolist() + res_time[b].tolist()
        held = [i for i, item in enumerate(ids) if item is not None]
        # newest first, ties by item (an item is held once, so no two entries tie on both)
        held.sort(key=lambda i: (-ts[i], ids[i]))
        keep = held[:r][::-1]
        k = len(keep)
        if k:
            # flat ring rows; the gather copies before the write, so rows of `a` move safely
            rows = res_vec.reshape(-1, self.dim)  # a view: the table is contiguous
            ar, br = a * r, b * r - r
            res_vec[a, :k] = rows.take([ar + i if i < r else br + i for i in keep], axis=0)
            res_time[a, :k] = [ts[i] for i in keep]
        if k < r:
            res_vec[a, k:] = 0.0
            res_time[a, k:] = 0.0
        res_ids[a] = [ids[i] for i in keep] + [None] * (r - k)
        self.res_next[a] = k

    def unfold(
        self, slot: int, parts: list[tuple[float, npt.NDArray[np.float64], list[str | None]]]
    ) -> list[str]:
        """Split parts out of a cluster: each part (share of the cluster, mean vector, the
        member items seen in it) becomes a new cluster holding that share of the weight and
        the listed members still in the cluster's reservoir (only those have vectors). The
        cluster keeps its id and the rest; one `split` event per part names exactly the
        items that moved. Returns the new cluster ids."""
        parts_done: list[tuple[int, list[str]]] = []
        for share, mean, items in parts:
            w_new = float(self.w[slot] * share)
            t = float(self.tref[slot])
            ns = self._open_cluster(mean / max(float(np.linalg.norm(mean)), 1e-12), t, weight=1.0)
            self.ls[ns] = mean * w_new
            self.w[ns] = w_new
            self.norm[ns] = float(np.linalg.norm(self.ls[ns]))
            self.centroids.put(ns, self.ls[ns] / self.norm[ns])
            self.ls[slot] -= self.ls[ns]
            self.w[slot] -= w_new
            self.status[ns] = ACTIVE if w_new >= self.cfg.min_weight else CANDIDATE
            moved: list[str] = []
            for it in items:
                if it is None or it not in self.members[slot] or it not in self.res_ids[slot]:
                    continue  # left the cluster, or its vector left the reservoir, since the start
                m = self.members[slot].pop(it)
                p = self.res_ids[slot].index(it)
                vec = self.res_vec[slot, p].copy()
                self.res_ids[slot][p] = None
                self.facets[slot].add(m[FACETS], -1)
                self._record_member(ns, vec, it, *m)
                moved.append(it)
            self.t_first[ns] = min((m[TIME] for m in self.members[ns].values()), default=t)
            self.t_last[ns] = max((m[TIME] for m in self.members[ns].values()), default=t)
            parts_done.append((ns, sorted(moved)))
        n = float(np.linalg.norm(self.ls[slot]))
        self.norm[slot] = n
        self.centroids.put(slot, self.ls[slot] / n)
        for ns, moved_items in parts_done:
            # one event per new part, so each names exactly the items that moved into it
            self.emit("split", slot, related=[self.cluster_id(ns)], moved=moved_items)
            if self.status[ns] == ACTIVE:
                self.emit("created", ns)
        self.touched.add(slot)
        return [self.cluster_id(ns) for ns, _ in parts_done]

    def remove(self, item_id: str) -> str | None:
        """Remove a member (upstream tombstone); returns the id of the cluster it left, None
        when the item is unknown. Exact when its vector is still in the cluster's
        reservoir; otherwise its weight leaves and the centroid keeps its direction."""
        slot = self.item_slot.get(item_id)
        if slot is None:
            return None
        left = self.cluster_id(slot)
        m = self.members[slot].pop(item_id)
        self.item_slot.pop(item_id, None)
        self.moves[item_id] = -1
        self.facets[slot].add(m[FACETS], -1)
        if not self.members[slot]:
            self.retire(slot, "emptied")
            return left
        wt = decay_factor(max(self.tref[slot] - m[TIME], 0.0), self.cfg.half_life_seconds)
        wt = min(wt, float(self.w[slot]) * (1 - 1e-9))
        if item_id in self.res_ids[slot]:
            p = self.res_ids[slot].index(item_id)
            self.ls[slot] -= wt * self.res_vec[slot, p].astype(np.float64)
            self.res_ids[slot][p] = None
            self.w[slot] -= wt
        else:
            old = float(self.w[slot])
            self.w[slot] = old - wt
            self.ls[slot] *= self.w[slot] / old
        n = float(np.linalg.norm(self.ls[slot]))
        if n < 1e-9:
            self.retire(slot, "emptied")
        else:
            self.norm[slot] = n
            self.centroids.put(slot, self.ls[slot] / n)
            if self.status[slot] == ACTIVE:
                self.emit("updated", slot, moved=[item_id], reason="member_deleted")
        return left

    def emit_updates(self) -> None:
        """One `updated` event per active cluster touched since the last call, by id."""
        for slot in sorted(self.touched, key=lambda s: int(self.cid[s])):
            if self.cid[slot] >= 0 and self.status[slot] == ACTIVE:
                self.emit("updated", slot)
        self.touched.clear()

    # ------------------------------------------------------------------ checkpoints
    def export(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """The live part of the scope as JSON-able fields and arrays (checkpoint.py writes
        them). Only live slots are written, and of their reservoirs only filled positions;
        free slots keep their numbers (`free`, `cap`), so a restored scope allocates the
        same slots, searches the same matrix and continues byte for byte."""
        live = self.live_slots()
        live_l = live.tolist()
        facet_index: dict[Facets, int] = {EMPTY: 0}
        m_ids: list[str] = []
        m_docs: list[str | None] = []
        m_slot: list[int] = []
        m_time: list[float] = []
        m_facet: list[int] = []
        r_ids: list[str] = []
        r_slot: list[int] = []
        r_pos: list[int] = []
        for s in live_l:
            for item, (doc, t, f) in self.members[s].items():
                m_ids.append(item)
                m_docs.append(doc)
                m_slot.append(s)
                m_time.append(t)
                m_facet.append(facet_index.setdefault(f, len(facet_index)))
            for p, rid in enumerate(self.res_ids[s]):
                if rid is not None:
                    r_ids.append(rid)
                    r_slot.append(s)
                    r_pos.append(p)
        rs = np.asarray(r_slot, dtype=np.int64)
        rp = np.asarray(r_pos, dtype=np.int64)
        fields: dict[str, Any] = {
            "embedding_type": self.key.embedding_type,
            "embedding_model": self.key.embedding_model,
            "fields": [list(kv) for kv in self.key.fields],
            "dim": self.dim,
            "cap": self.cap,
            "n_used": self.n_used,
            "free": list(self.free),
            "seq": self.seq,
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "last_tick_time": self.last_tick_time,
            "next_no": self.next_no,
            "event_seq": self.event_seq,
            "touched": sorted(self.touched),
            "dirty": sorted(self.dirty),
            "size_warned": sorted(self.size_warned),
            "size_warnings": self.size_warnings,
            "drift_detected": bool(self.adwin.drift_detected),
            "block_new": self.block_new,
            "drift_pending": self.drift_pending,
            "drifts": self.drifts,
            "items_since_recon": self.items_since_recon,
            "last_recon_time": self.last_recon_time,
            "recon_runs": self.recon_runs,
            "facet_counts": [
                [dict(c) for c in (f.terms, f.entities, f.domains, f.event_types)]
                + [[[k, v, n] for (k, v), n in f.tags.items()]]
                for f in (self.facets[s] for s in live_l)
            ],
            "facet_table": [
                [list(terms), list(ents), dom, evt, [list(g) for g in tags]]
                for terms, ents, dom, evt, tags in facet_index
            ],
            "member_ids": m_ids,
            "member_documents": m_docs,
            "reservoir_ids": r_ids,
        }
        arrays: dict[str, npt.NDArray[Any]] = {
            "slots": live,
            "ls": self.ls[live],
            "cent": self.centroids.of_many(live),
            "w": self.w[live],
            "tref": self.tref[live],
            "norm": self.norm[live],
            "t_first": self.t_first[live],
            "t_last": self.t_last[live],
            "cid": self.cid[live],
            "status": self.status[live],
            "res_next": self.res_next[live],
            "member_slot": np.asarray(m_slot, dtype=np.int64),
            "member_time": np.asarray(m_time, dtype=np.float64),
            "member_facet": np.asarray(m_facet, dtype=np.int64),
            "res_slot": rs,
            "res_pos": rp,
            "res_vec": self.res_vec[rs, rp],
            "res_time": self.res_time[rs, rp],
            # river's own serialisation of its ADWIN window (a few hundred bytes)
            "adwin": np.frombuffer(self.adwin._helper.__getstate__(), dtype=np.uint8),
        }
        return fields, arrays

    @classmethod
    def restore(
        cls, cfg: EngineConfig, fields: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]
    ) -> ScopeState:
        """The inverse of `export`."""
        key = ScopeKey(
            fields["embedding_type"],
            fields["embedding_model"],
            tuple((str(k), str(v)) for k, v in fields["fields"]),
        )
        st = cls(key, int(fields["dim"]), cfg)
        st.free = []
        st._grow(int(fields["cap"]))
        st.free = [int(x) for x in fields["free"]]
        st.n_used = int(fields["n_used"])
        live = arrays["slots"]
        for name in ("ls", "w", "tref", "norm", "t_first", "t_last", "cid", "status"):
            getattr(st, name)[live] = arrays[name]
        st.centroids.put_many(live, arrays["cent"])
        st.res_next[live] = arrays["res_next"]
        st.slot_of = {int(c): int(s) for c, s in zip(arrays["cid"], live, strict=True)}
        # format 1 wrote no granularity tags (four entries per row): they restore empty
        table = [EMPTY] + [
            (tuple(row[0]), tuple(row[1]), row[2], row[3], _tags(row))
            for row in fields["facet_table"][1:]
        ]
        for s, counts in zip(live.tolist(), fields["facet_counts"], strict=True):
            f = st.facets[s]
            for counter, values in zip(
                (f.terms, f.entities, f.domains, f.event_types), counts[:4], strict=True
            ):
                counter.update(values)
            if len(counts) > 4:
                f.tags.update({(k, v): n for k, v, n in counts[4]})
        m_slot = arrays["member_slot"].tolist()
        m_time = arrays["member_time"].tolist()
        m_facet = arrays["member_facet"].tolist()
        for item, doc, s, t, fi in zip(
            fields["member_ids"], fields["member_documents"], m_slot, m_time, m_facet, strict=True
        ):
            st.members[s][item] = (doc, t, table[fi])
            st.item_slot[item] = s
        rs, rp = arrays["res_slot"], arrays["res_pos"]
        st.res_vec[rs, rp] = arrays["res_vec"]
        st.res_time[rs, rp] = arrays["res_time"]
        for item, s, p in zip(fields["reservoir_ids"], rs.tolist(), rp.tolist(), strict=True):
            st.res_ids[s][p] = item
        st.seq = int(fields["seq"])
        wm = fields["watermark"]
        st.watermark = -math.inf if wm is None else float(wm)
        st.last_tick_time = fields["last_tick_time"]
        st.next_no = int(fields["next_no"])
        st.event_seq = int(fields["event_seq"])
        st.touched = {int(x) for x in fields["touched"]}
        st.dirty = {int(x) for x in fields["dirty"]}
        st.size_warned = {int(x) for x in fields["size_warned"]}
        st.size_warnings = int(fields["size_warnings"])
        try:
            st.adwin._helper.__setstate__(arrays["adwin"].tobytes())
        except Exception as exc:  # river's format: a river upgrade may change it
            raise CheckpointError(f"drift detector state of scope {st.name}: {exc}") from exc
        st.adwin._drift_detected = bool(fields["drift_detected"])
        st.block_new = int(fields["block_new"])
        st.drift_pending = bool(fields["drift_pending"])
        st.drifts = int(fields["drifts"])
        st.items_since_recon = int(fields["items_since_recon"])
        st.last_recon_time = fields["last_recon_time"]
        st.recon_runs = int(fields["recon_runs"])
        return st

    def refresh_centroids(self) -> None:
        """Bring the centroid rows of clusters folded into since the last call up to date."""
        if self.dirty:
            rows = np.fromiter(self.dirty, dtype=np.int64, count=len(self.dirty))
            self.dirty.clear()
            rows = rows[self.cid[rows] >= 0]
            self.centroids.put_many(rows, self.ls[rows] / self.norm[rows, None])

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
        if self.centroids.n:
            dist, idx = knn_inner_product(
                x32, self.centroids.rows, k, cfg.search_threads, cfg.search_backend
            )
            near = np.where(idx >= 0, self.centroids.slots[np.maximum(idx, 0)], -1)
            cand = np.unique(near[near >= 0])
            cand = cand[np.argsort(self.cid[cand], kind="stable")]
            if n_live > k:
                bound = dist[:, -1].astype(np.float64) + 1e-6
            else:
                bound = np.full(b, -math.inf)
        else:
            cand = np.zeros(0, dtype=np.int64)
            near = np.full((b, 0), -1, dtype=np.int64)
            bound = np.full(b, -math.inf)
        nc0 = cand.shape[0]
        width = nc0 + 2 * b  # each item adds at most a fallback column and a new one
        cols = np.full(width, -1, dtype=np.int64)
        cols[:nc0] = cand
        acc = np.empty((b, width))
        # untracked: -inf. Columns past the candidates are written by the kernel for every
        # row after the item that adds them (rows before it never read them again)
        score = np.empty((b, width))
        score[:, :nc0] = -math.inf
        gram = x64 @ x64.T
        # time weights between items of the segment: a cluster an item joins (or opens) takes
        # that item's time as its reference, so its column of scores reuses this matrix
        tw = np.subtract.outer(times, times)
        np.abs(tw, out=tw)
        np.exp(np.divide(tw, -tau, out=tw), out=tw)  # exp(-|ti - tj| / tau), in place
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
            col_of, nc0, near, bound, self.ls, self.w, self.tref, self.norm, self.cid, self.t_first,
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
        """`record_member` for a whole segment, with the effects of recording the items one
        after the other: memberships, facets, size warnings and promotions (`created`, at
        the watermark of its item) in item order; reservoir rings, counters and drift
        samples computed per segment (none of them is read inside the loop)."""
        cfg = self.cfg
        nb = len(items)
        members = self.members
        slots_l = slots.tolist()
        times_l = times.tolist()
        cid_l = self.cid[slots].tolist()
        status = self.status
        out_st = status[slots].tolist()  # as of the segment start; promotions below
        reach = (w_after >= cfg.min_weight).tolist()
        warn_at, warned = cfg.size_warning, self.size_warned
        scope_facets = self.facets
        has_facets = any(f is not EMPTY for f in facets)
        promoted: set[int] = set()
        running_max: list[float] | None = None
        for i, slot in enumerate(slots_l):
            mem = members[slot]
            mem[items[i]] = (docs[i], times_l[i], facets[i])
            if has_facets and facets[i] is not EMPTY:
                scope_facets[slot].add(facets[i])
            if len(mem) > warn_at and cid_l[i] not in warned:
                self._warn_size(slot)
            if out_st[i] == CANDIDATE:
                if slot in promoted:
                    out_st[i] = ACTIVE
                elif reach[i]:
                    promoted.add(slot)
                    status[slot] = ACTIVE
                    out_st[i] = ACTIVE
                    if running_max is None:
                        running_max = np.maximum.accumulate(times).tolist()
                    if running_max[i] > self.watermark:
                        self.watermark = running_max[i]
                    self.emit("created", slot, weight=float(w_after[i]))
        out_status[:] = out_st
        if nb:
            top = max(times_l)
            if top > self.watermark:
                self.watermark = top
        self.item_slot.update(zip(items, slots_l, strict=True))
        self.moves.update(zip(items, cid_l, strict=True))
        self._record_rings(slots, x32, items, times)
        np.minimum.at(self.t_first, slots, times)
        np.maximum.at(self.t_last, slots, times)
        self._count_segment(nb, is_new)

    def _record_rings(
        self,
        slots: npt.NDArray[np.int64],
        x32: npt.NDArray[np.float32],
        items: list[str],
        times: npt.NDArray[np.float64],
    ) -> None:
        """Each slot's items of the segment take the next ring positions in item order; of
        those only the last `reservoir_size` remain, so only they are written."""
        r = self.cfg.reservoir_size
        order = np.argsort(slots, kind="stable")
        ss = slots[order]
        starts = np.flatnonzero(np.concatenate(([True], ss[1:] != ss[:-1])))
        counts = np.diff(np.append(starts, ss.size))
        uniq = ss[starts]
        rank = np.arange(ss.size) - np.repeat(starts, counts)
        keep = rank >= np.repeat(counts, counts) - r
        rows, ks = order[keep], ss[keep]
        pos = (self.res_next[ks] + rank[keep]) % r
        self.res_vec[ks, pos] = x32[rows]
        self.res_time[ks, pos] = times[rows]
        res_ids = self.res_ids
        for sl, p, i in zip(ks.tolist(), pos.tolist(), rows.tolist(), strict=True):
            res_ids[sl][p] = items[i]
        self.res_next[uniq] += counts
        touched = uniq.tolist()
        self.touched.update(touched)
        self.dirty.update(touched)

    def _count_segment(self, nb: int, is_new: npt.NDArray[np.bool_]) -> None:
        """Item counters, and a drift sample after every `drift_block`-th item of the scope
        with the share of new clusters in its block."""
        block = self.cfg.drift_block
        seq0 = self.seq
        self.seq += nb
        self.items_since_recon += nb
        first = block - 1 - seq0 % block  # the first item that ends a block
        if first >= nb:
            self.block_new += int(np.count_nonzero(is_new))
            return
        opened = np.cumsum(is_new).tolist()
        before = 0
        for end in range(first, nb, block):
            self.block_new += opened[end] - before
            before = opened[end]
            self._drift_sample()
        self.block_new += opened[-1] - before

    def _drift_sample(self) -> None:
        rate = self.block_new / self.cfg.drift_block
        self.block_new = 0
        self.adwin.update(rate)
        if self.adwin.drift_detected:
            self.drift_pending = True
            self.drifts += 1
