"""The engine: routes items to scopes, runs assignment, maintenance and reconsolidation at
fixed item positions, and reports what changed. Deterministic for a given input order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from processors import lifecycle, results
from processors.config import EngineConfig
from processors.facets import EMPTY, Facets, extract
from processors.reconsolidate import Job, Trigger, apply, compute, prepare, reconsolidate
from processors.representatives import document_frequency
from processors.scope import ACTIVE, STATUS_NAMES, ScopeKey, ScopeState
from schemas.inputs import VectorEvent
from schemas.outputs import Assignment, ChangeEvent, ClusterResult, ReconsolidationRecord
from schemas.validation import (
    DEFAULT_LIMITS,
    InputError,
    ValidationLimits,
    check_dimension,
    decode_vector,
)

_LN2 = math.log(2.0)
_EXECUTOR: ThreadPoolExecutor | None = None

SEGMENT_ITEMS = 256
"""Items per assignment call at most. A segment costs O(segment x (candidates + segment))
in scores and Gram matrix, so long segments cost more per item; where segments end never
changes the result (batch == one by one)."""


def warm_up() -> None:
    """Load the compiled assignment kernel now (numba loads or compiles it on first use, about
    a second here) so that a service's first batch does not pay it as latency."""
    eng = Engine(EngineConfig())
    eng.process(np.eye(2, 8, dtype=np.float32), ["warm-up-a", "warm-up-b"], np.zeros(2))


def _executor() -> ThreadPoolExecutor:
    """One background thread for reconsolidation computations of every engine."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconsolidate")
    return _EXECUTOR


@dataclass
class BatchResult:
    """Per-input results in input order (compact arrays; `assignments()` builds models)."""

    item_ids: list[str] = field(default_factory=list)
    document_ids: list[str | None] = field(default_factory=list)
    scopes: list[ScopeState] = field(default_factory=list)
    cluster_no: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    similarity: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    new_cluster: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    status: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, np.int8))
    event_time: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    sequence: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    changes: list[ChangeEvent] = field(default_factory=list)
    reconsolidations: list[ReconsolidationRecord] = field(default_factory=list)

    def cluster_id(self, i: int) -> str:
        return self.scopes[i].cluster_name(int(self.cluster_no[i]))

    def assignments(self) -> list[Assignment]:
        return [
            Assignment.model_construct(
                item_id=self.item_ids[i],
                document_id=self.document_ids[i],
                scope=self.scopes[i].name,
                cluster_id=self.cluster_id(i),
                status=STATUS_NAMES[int(self.status[i])],
                similarity=float(self.similarity[i]),
                new_cluster=bool(self.new_cluster[i]),
                event_time=float(self.event_time[i]),
                sequence=int(self.sequence[i]),
            )
            for i in range(len(self.item_ids))
        ]


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.cfg = config or EngineConfig()
        self.cfg.validate()
        self.scopes: dict[ScopeKey, ScopeState] = {}
        self._running: dict[ScopeKey, Future[Job]] = {}

    # ------------------------------------------------------------------ routing
    def scope_key(self, embedding_type: str, model: str, meta: dict[str, Any] | None) -> ScopeKey:
        fields = tuple((f, str((meta or {}).get(f, ""))) for f in self.cfg.scope_fields)
        return ScopeKey(embedding_type, model, fields)

    def scope(self, key: ScopeKey, dim: int) -> ScopeState:
        st = self.scopes.get(key)
        if st is None:
            st = ScopeState(key, dim, self.cfg)
            self.scopes[key] = st
        return st

    def find_item(self, item_id: str) -> tuple[ScopeState, int] | None:
        for st in self.scopes.values():
            slot = st.item_slot.get(item_id)
            if slot is not None:
                return st, slot
        return None

    # ------------------------------------------------------------------ input
    def decode_events(
        self, events: Sequence[VectorEvent], limits: ValidationLimits = DEFAULT_LIMITS
    ) -> tuple[
        list[tuple[VectorEvent, npt.NDArray[np.float32], ScopeKey]], list[tuple[int, InputError]]
    ]:
        """Vectors decoded and checked against their scope's dimension; bad ones reported."""
        good: list[tuple[VectorEvent, npt.NDArray[np.float32], ScopeKey]] = []
        bad: list[tuple[int, InputError]] = []
        dims: dict[ScopeKey, int] = {k: s.dim for k, s in self.scopes.items()}
        for i, ev in enumerate(events):
            try:
                vec = decode_vector(ev.vector, limits)
                key = self.scope_key(ev.embedding_type, ev.embedding_model, ev.metadata)
                dim = dims.setdefault(key, vec.shape[0])
                check_dimension(vec, dim, key.name)
            except InputError as exc:
                bad.append((i, exc))
                continue
            good.append((ev, vec, key))
        return good, bad

    def process_events(
        self, events: Sequence[VectorEvent]
    ) -> tuple[BatchResult, list[tuple[int, InputError]]]:
        good, bad = self.decode_events(events)
        if not good:
            return BatchResult(), bad
        return self.process(
            np.vstack([v for _, v, _ in good]),
            [e.item_id for e, _, _ in good],
            np.asarray([e.event_time for e, _, _ in good], dtype=np.float64),
            [e.document_id for e, _, _ in good],
            [e.metadata for e, _, _ in good],
            [k for _, _, k in good],
        ), bad

    def process(
        self,
        vectors: npt.NDArray[np.float32],
        item_ids: list[str],
        event_times: npt.NDArray[np.float64],
        document_ids: list[str | None] | None = None,
        metadata: list[dict[str, Any] | None] | None = None,
        scopes: list[ScopeKey] | ScopeKey | None = None,
    ) -> BatchResult:
        """Cluster a micro-batch of unit vectors, in order. Items already known are replaced
        (an upstream re-send): the old membership is removed first."""
        n = vectors.shape[0]
        x32 = np.ascontiguousarray(vectors, dtype=np.float32)
        times = np.asarray(event_times, dtype=np.float64)
        docs: list[str | None] = list(document_ids) if document_ids is not None else [None] * n
        facets = [extract(m) for m in metadata] if metadata is not None else [EMPTY] * n
        if scopes is None:
            scopes = ScopeKey("document", "default")
        keys = [scopes] * n if isinstance(scopes, ScopeKey) else scopes
        res = BatchResult(
            item_ids=list(item_ids),
            document_ids=list(docs),
            scopes=[None] * n,  # type: ignore[list-item]
            cluster_no=np.zeros(n, np.int64),
            similarity=np.zeros(n),
            new_cluster=np.zeros(n, bool),
            status=np.zeros(n, np.int8),
            event_time=times,
            sequence=np.zeros(n, np.int64),
        )
        for it in item_ids:
            if self.find_item(it) is not None:
                res.changes.extend(self.delete(it))
        groups: dict[ScopeKey, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        for key, rows in groups.items():
            st = self.scope(key, x32.shape[1])
            if x32.shape[1] != st.dim:
                raise InputError("dimension_mismatch", f"scope {st.name} uses {st.dim} dimensions")
            idx = np.asarray(rows)
            self._run_scope(st, idx, x32, item_ids, docs, times, facets, res)
        return res

    def _run_scope(
        self,
        st: ScopeState,
        idx: npt.NDArray[np.int64],
        x32: npt.NDArray[np.float32],
        item_ids: list[str],
        docs: list[str | None],
        times: npt.NDArray[np.float64],
        facets: list[Facets],
        res: BatchResult,
    ) -> None:
        tick, tick_s = self.cfg.tick_items, self.cfg.tick_seconds
        pos = 0
        while pos < idx.size:
            room = min(tick - (st.seq % tick), SEGMENT_ITEMS)
            seg = idx[pos : pos + room]
            if st.last_tick_time is None:
                st.last_tick_time = float(times[seg[0]])
            # an event-time tick cuts the segment after the first item that is due, exactly
            # where one-by-one processing would run maintenance
            late = np.flatnonzero(times[seg] - st.last_tick_time >= tick_s)
            due = bool(late.size)
            if due:
                seg = seg[: late[0] + 1]
            start_seq = st.seq
            out_no = np.zeros(seg.size, np.int64)
            out_sim = np.zeros(seg.size)
            out_new = np.zeros(seg.size, bool)
            out_status = np.zeros(seg.size, np.int8)
            st.assign(
                x32[seg],
                [item_ids[i] for i in seg],
                [docs[i] for i in seg],
                times[seg],
                [facets[i] for i in seg],
                out_no,
                out_sim,
                out_new,
                out_status,
            )
            res.cluster_no[seg] = out_no
            res.similarity[seg] = out_sim
            res.new_cluster[seg] = out_new
            res.status[seg] = out_status
            res.sequence[seg] = np.arange(start_seq, start_seq + seg.size)
            for i in seg:
                res.scopes[i] = st
            pos += seg.size
            if due or st.seq % tick == 0:
                self._maintain(st, res)
            res.changes.extend(st.events)
            st.events.clear()

    def _maintain(self, st: ScopeState, res: BatchResult) -> None:
        lifecycle.tick(st)
        pending = st.pending_recon
        if pending is not None:
            if st.seq >= pending[1]:
                self._apply_pending(st, res)
            return
        trigger: Trigger | None = None
        if st.drift_pending:
            trigger = "drift"
        elif st.items_since_recon >= self.cfg.reconsolidate_items:
            trigger = "items"
        elif st.last_recon_time is not None and (
            st.watermark - st.last_recon_time >= self.cfg.reconsolidate_seconds
        ):
            trigger = "event_time"
        if st.last_recon_time is None:
            st.last_recon_time = st.watermark
        if trigger is None:
            return
        job = prepare(st, trigger)
        tick = self.cfg.tick_items
        delay = -(-self.cfg.reconsolidate_delay_items // tick) * tick
        if job.record.skipped is not None or delay == 0:
            res.reconsolidations.append(apply(st, job))
            lifecycle.emit_updates(st)
            return
        # HDBSCAN runs in the background while assignment goes on; its result is applied
        # exactly `delay` items later (waiting for it only if it is not done by then), so
        # where it lands depends on item counts, never on how long it took
        st.pending_recon = (job, st.seq + delay)
        self._running[st.key] = _executor().submit(compute, job)

    def _apply_pending(self, st: ScopeState, res: BatchResult) -> None:
        assert st.pending_recon is not None
        job = st.pending_recon[0]
        fut = self._running.pop(st.key, None)
        if fut is not None:
            job = fut.result()
        st.pending_recon = None
        res.reconsolidations.append(apply(st, job))
        lifecycle.emit_updates(st)

    def __getstate__(self) -> dict[str, Any]:
        """Checkpoints carry a pending run's inputs, not its thread: a restored engine
        computes it again (same inputs, same result) when it is due."""
        state = dict(self.__dict__)
        state["_running"] = {}
        return state

    # ------------------------------------------------------------------ control
    def flush(self) -> BatchResult:
        """End of input (replay): apply pending reconsolidations, run maintenance now."""
        res = BatchResult()
        for st in self.scopes.values():
            if st.pending_recon is not None:
                self._apply_pending(st, res)
            lifecycle.tick(st)
            res.changes.extend(st.events)
            st.events.clear()
        return res

    def reconsolidate_all(self) -> BatchResult:
        res = BatchResult()
        for st in self.scopes.values():
            res.reconsolidations.append(reconsolidate(st, "manual"))
            lifecycle.emit_updates(st)
            res.changes.extend(st.events)
            st.events.clear()
        return res

    def delete(self, item_id: str) -> list[ChangeEvent]:
        """Remove an item (upstream tombstone). Exact when its vector is still in the
        cluster's reservoir; otherwise its weight leaves and the centroid keeps its direction."""
        found = self.find_item(item_id)
        if found is None:
            return []
        st, slot = found
        m = st.members[slot].pop(item_id)
        st.item_slot.pop(item_id, None)
        st.moves[item_id] = -1
        st.facets[slot].add(m.facets, -1)
        if not st.members[slot]:
            lifecycle.retire(st, slot, "emptied")
        else:
            wt = math.exp(
                -_LN2 * max(st.tref[slot] - m.event_time, 0.0) / self.cfg.half_life_seconds
            )
            wt = min(wt, float(st.w[slot]) * (1 - 1e-9))
            if item_id in st.res_ids[slot]:
                p = st.res_ids[slot].index(item_id)
                st.ls[slot] -= wt * st.res_vec[slot, p].astype(np.float64)
                st.res_ids[slot][p] = None
                st.w[slot] -= wt
            else:
                old = float(st.w[slot])
                st.w[slot] = old - wt
                st.ls[slot] *= st.w[slot] / old
            n = float(np.linalg.norm(st.ls[slot]))
            if n < 1e-9:
                lifecycle.retire(st, slot, "emptied")
            else:
                st.norm[slot] = n
                st.cent[slot] = st.ls[slot] / n
                if st.status[slot] == ACTIVE:
                    st.emit("updated", slot, moved=[item_id], reason="member_deleted")
        out = list(st.events)
        st.events.clear()
        return out

    # ------------------------------------------------------------------ output
    def snapshot(self, include_candidates: bool = False) -> list[ClusterResult]:
        out: list[ClusterResult] = []
        for st in self.scopes.values():
            live = [int(s) for s in st.live_slots()]
            live.sort(key=lambda s: int(st.cid[s]))
            df = document_frequency(st)
            for s in live:
                if st.status[s] != ACTIVE and not include_candidates:
                    continue
                out.append(self.cluster_result(st, s, df, len(live)))
        return out

    def cluster_result(
        self, st: ScopeState, slot: int, df: dict[str, int] | None = None, n_live: int = 0
    ) -> ClusterResult:
        return results.cluster_result(self.cfg, st, slot, df, n_live)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for st in self.scopes.values():
            live = st.live_slots()
            out[st.name] = {
                "items": st.seq,
                "active": int((st.status[live] == ACTIVE).sum()),
                "candidates": int((st.status[live] != ACTIVE).sum()),
                "size_warnings": st.size_warnings,
                "reconsolidations": st.recon_runs,
                "drifts": st.drifts,
                "members_in_memory": len(st.item_slot),
            }
        return out
