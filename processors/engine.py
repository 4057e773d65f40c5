"""The engine: routes items to scopes, runs assignment, maintenance and reconsolidation at
fixed item positions, and reports what changed. Deterministic for a given input order."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from processors import checkpoint, lifecycle, results
from processors.batch import (
    DEFAULT_SCOPE,
    Batch,
    BatchResult,
    ClusterState,
    ClusterStatusName,
    Move,
)
from processors.config import EngineConfig
from processors.facets import EMPTY, Facets, extract
from processors.reconsolidate import Job, Trigger, apply, compute, prepare, reconsolidate
from processors.representatives import document_frequency
from processors.scope import ACTIVE, STATUS_NAMES, ScopeKey, ScopeState
from processors.search import blas_threads
from schemas.errors import CheckpointError
from schemas.outputs import ClusterResult
from schemas.validation import dimension_mismatch

_EXECUTOR: ThreadPoolExecutor | None = None

SEGMENT_ITEMS = 256
"""Items per assignment call at most. A segment costs O(segment x (candidates + segment))
in scores and Gram matrix, so long segments cost more per item; where segments end never
changes the result (batch == one by one)."""


def warm_up() -> None:
    """Load the compiled assignment kernel now (numba loads or compiles it on first use, about
    a second here) so that a service's first batch does not pay it as latency."""
    eng = Engine(EngineConfig())
    eng.learn(Batch(np.eye(2, 8, dtype=np.float32), ["warm-up-a", "warm-up-b"], np.zeros(2)))


def _executor() -> ThreadPoolExecutor:
    """One background thread for reconsolidation computations of every engine."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconsolidate")
    return _EXECUTOR


class Engine:
    """Streaming clusterer of unit vectors: learn batches, forget items, read clusters,
    checkpoint. Every call returns a `BatchResult` with everything it changed.

    >>> import numpy as np
    >>> from processors import Batch, Engine, EngineConfig
    >>> engine = Engine(EngineConfig(min_weight=2.0))
    >>> x = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)
    >>> res = engine.learn(Batch(x, ["a", "b", "c"], event_times=np.zeros(3)))
    >>> [a.new_cluster for a in res.assignments()]
    [True, False, True]
    >>> [(e.kind, e.size) for e in res.changes]
    [('created', 2)]
    >>> restored = Engine.restore(engine.snapshot())  # a checkpoint, byte for byte
    >>> gone = restored.forget(["a"])
    >>> [(m.item_id, m.cluster_id) for m in gone.moves]
    [('a', None)]
    >>> [(c.cluster_size, c.member_ids) for c in restored.results()]
    [(1, ['b'])]
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.cfg = config or EngineConfig()
        self.scopes: dict[ScopeKey, ScopeState] = {}
        self._running: dict[ScopeKey, Future[Job]] = {}
        self._keys: dict[tuple[str, str], ScopeKey] = {}  # see scope_key

    _KEYS_LIMIT = 4096

    # ------------------------------------------------------------------ routing
    def scope_key(self, embedding_type: str, model: str, meta: dict[str, Any] | None) -> ScopeKey:
        """The clustering space of an item: its type and model, split further by the
        configured metadata fields (`scope_fields`). Without those fields a key depends on
        the type and model alone, a handful of pairs in practice, and the router and the
        worker ask for one per event: it is looked up, not built (models are input, so the
        table is cleared once it holds `_KEYS_LIMIT`)."""
        if self.cfg.scope_fields:
            fields = tuple((f, str((meta or {}).get(f, ""))) for f in self.cfg.scope_fields)
            return ScopeKey(embedding_type, model, fields)
        pair = (embedding_type, model)
        key = self._keys.get(pair)
        if key is None:
            if len(self._keys) >= self._KEYS_LIMIT:
                self._keys.clear()
            key = self._keys[pair] = ScopeKey(embedding_type, model)
        return key

    def dimension(self, key: ScopeKey) -> int | None:
        """The vector size a scope uses; None before its first item."""
        st = self.scopes.get(key)
        return None if st is None else st.dim

    def _scope(self, key: ScopeKey, dim: int) -> ScopeState:
        st = self.scopes.get(key)
        if st is None:
            st = ScopeState(key, dim, self.cfg)
            self.scopes[key] = st
        return st

    def _find(self, item_id: str) -> ScopeState | None:
        for st in self.scopes.values():
            if item_id in st.item_slot:
                return st
        return None

    # ------------------------------------------------------------------ learning
    def learn(self, batch: Batch) -> BatchResult:
        """Cluster a batch of unit vectors, in order (the result is the same as one item at a
        time). Items already known are replaced (an upstream re-send): the old membership
        is removed first."""
        with blas_threads(self.cfg.search_threads):
            return self._learn(batch)

    def _learn(self, batch: Batch) -> BatchResult:
        n = len(batch)
        x32 = batch.vectors
        times = batch.event_times
        item_ids = list(batch.item_ids)
        docs: list[str | None] = (
            list(batch.document_ids) if batch.document_ids is not None else [None] * n
        )
        facets = [extract(m) for m in batch.metadata] if batch.metadata is not None else [EMPTY] * n
        keys = batch.scopes if batch.scopes is not None else [DEFAULT_SCOPE] * n
        groups: dict[ScopeKey, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        for key in groups:
            dim = self.dimension(key)
            if dim is not None and dim != x32.shape[1]:
                raise dimension_mismatch(key.name, dim, x32.shape[1])
        res = BatchResult(
            item_ids=item_ids,
            document_ids=docs,
            scopes=[""] * n,
            cluster_ids=[""] * n,
            similarity=np.zeros(n),
            new_cluster=np.zeros(n, bool),
            status=np.zeros(n, np.int8),
            event_time=times,
            sequence=np.zeros(n, np.int64),
        )
        left: dict[str, set[str]] = {}
        self._remove_known(item_ids, res, left)
        for key, rows in groups.items():
            st = self._scope(key, x32.shape[1])
            self._run_scope(st, np.asarray(rows), x32, item_ids, docs, times, facets, res)
        return self._finish(res, left)

    def forget(self, item_ids: Iterable[str]) -> BatchResult:
        """Remove items (upstream tombstones); unknown ids are ignored."""
        res = BatchResult()
        left: dict[str, set[str]] = {}
        self._remove_known(list(item_ids), res, left)
        return self._finish(res, left)

    def flush(self) -> BatchResult:
        """End of input: apply pending reconsolidations and run maintenance now. A service
        never calls it (its input has no end); `clusterer replay` does by default."""
        with blas_threads(self.cfg.search_threads):
            return self._flush()

    def _flush(self) -> BatchResult:
        res = BatchResult()
        for st in self.scopes.values():
            if st.pending_recon is not None:
                self._apply_pending(st, res)
            lifecycle.tick(st)
            res.changes.extend(st.events)
            st.events.clear()
        return self._finish(res)

    def reconsolidate(self) -> BatchResult:
        """A manual reconsolidation of every scope, now (inline)."""
        res = BatchResult()
        for st in self.scopes.values():
            res.reconsolidations.append(reconsolidate(st, "manual"))
            st.emit_updates()
            res.changes.extend(st.events)
            st.events.clear()
        return self._finish(res)

    def _remove_known(
        self, item_ids: list[str], res: BatchResult, left: dict[str, set[str]]
    ) -> None:
        """Remove, in input order, the items some scope holds: most items of a batch are new,
        so one set intersection per scope finds the few to look at."""
        known: set[str] = set()
        for st in self.scopes.values():
            known.update(st.item_slot.keys() & item_ids)
        if known:
            for it in item_ids:
                if it in known:
                    self._remove(it, res, left)

    def _remove(self, item_id: str, res: BatchResult, left: dict[str, set[str]]) -> None:
        st = self._find(item_id)
        if st is None:
            return
        cid = st.remove(item_id)
        if cid is not None:
            left.setdefault(st.name, set()).add(cid)
        res.changes.extend(st.events)
        st.events.clear()

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
            res.similarity[seg] = out_sim
            res.new_cluster[seg] = out_new
            res.status[seg] = out_status
            res.sequence[seg] = np.arange(start_seq, start_seq + seg.size)
            names = st.cluster_names(out_no.tolist())
            lo, hi = int(seg[0]), int(seg[-1]) + 1
            if hi - lo == seg.size:  # rows of one scope are increasing: a run of the batch
                res.cluster_ids[lo:hi] = names
                res.scopes[lo:hi] = [st.name] * seg.size
            else:
                for i, name in zip(seg.tolist(), names, strict=True):
                    res.cluster_ids[i] = name
                    res.scopes[i] = st.name
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
            st.emit_updates()
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
        st.emit_updates()

    def _finish(self, res: BatchResult, left: dict[str, set[str]] | None = None) -> BatchResult:
        """Drain what the call changed into the result: the moves, and the state of every
        cluster an event names, a move enters or an item left."""
        sims = dict(zip(res.item_ids, res.similarity.tolist(), strict=True))
        named: dict[str, set[str]] = {}
        merged_away: set[str] = set()
        for ev in res.changes:
            ids = named.setdefault(ev.scope, set())
            ids.add(ev.cluster_id)
            if ev.kind == "merged":
                ids.update(ev.related_ids)
                merged_away.update(ev.related_ids)
            elif ev.kind == "split":
                ids.update(ev.related_ids)
        for st in self.scopes.values():
            moves = st.drain_moves()
            res.size_warnings.extend(st.drain_size_warnings())
            touched = named.get(st.name, set()) | (left or {}).get(st.name, set())
            if not moves and not touched:
                continue
            etype, scope = st.key.embedding_type, st.name
            members, slot_of, name, sim = st.members, st.slot_of, st.cluster_name, sims.get
            append = res.moves.append
            entered: set[int] = set()
            for item, no in moves.items():
                if no < 0:
                    append(Move(item, scope, etype, None))
                    continue
                doc, t, _ = members[slot_of[no]][item]
                append(Move(item, scope, etype, name(no), doc, t, sim(item)))
                entered.add(no)
            touched.update(st.cluster_names(list(entered)))
            for cid in sorted(touched):
                res.clusters.append(_cluster_state(st, cid, cid in merged_away))
        return res

    # ------------------------------------------------------------------ checkpoints
    def snapshot(self) -> bytes:
        """A checkpoint of the whole engine (processors/checkpoint.py: versioned, not
        pickle, live state only). A started background reconsolidation is saved as its
        inputs; the restored engine computes it again (same inputs, same result)."""
        parts = []
        for st in self.scopes.values():
            fields, arrays = st.export()
            if st.pending_recon is not None:
                job, apply_at = st.pending_recon
                job_fields, job_arrays = job.export()
                fields["pending"] = {"apply_at": apply_at, **job_fields}
                arrays.update({f"pending_{k}": v for k, v in job_arrays.items()})
            parts.append((fields, arrays))
        return checkpoint.dump(self.cfg.to_mapping(), parts)

    @classmethod
    def restore(cls, data: bytes) -> Engine:
        """The engine a checkpoint holds, with the config it was written with. Raises
        CheckpointError (a ClustererError) for anything that is not a checkpoint this
        version reads."""
        config, parts = checkpoint.load(data)
        try:
            eng = cls(EngineConfig.from_mapping(config))
            for fields, arrays in parts:
                st = ScopeState.restore(eng.cfg, fields, arrays)
                pending = fields.get("pending")
                if pending is not None:
                    job = Job.restore(
                        pending,
                        {k[8:]: v for k, v in arrays.items() if k.startswith("pending_")},
                    )
                    st.pending_recon = (job, int(pending["apply_at"]))
                    eng._running[st.key] = _executor().submit(compute, job)
                eng.scopes[st.key] = st
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(f"checkpoint is damaged: {exc!r}") from exc
        return eng

    # ------------------------------------------------------------------ output
    def results(self, include_candidates: bool = False) -> list[ClusterResult]:
        """The latest state of every live cluster (active ones unless asked), by scope
        then id, in the Stage 5 shape."""
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

    def clusters(self, cluster_ids: Iterable[str]) -> list[ClusterResult]:
        """The latest state of the named clusters that are live (any status), in the
        order given; ids of clusters that are gone are skipped."""
        by_prefix = {st.prefix: st for st in self.scopes.values()}
        dfs: dict[str, dict[str, int]] = {}
        out: list[ClusterResult] = []
        for cid in cluster_ids:
            st = by_prefix.get(cid.rpartition("-")[0])
            slot = st.slot_for(cid) if st is not None else None
            if st is None or slot is None:
                continue
            df = dfs.get(st.name)
            if df is None:
                df = dfs[st.name] = document_frequency(st)
            out.append(self.cluster_result(st, slot, df, len(st.slot_of)))
        return out

    def cluster_result(
        self, st: ScopeState, slot: int, df: dict[str, int] | None = None, n_live: int = 0
    ) -> ClusterResult:
        return results.cluster_result(self.cfg, st, slot, df, n_live)

    def stats(self) -> dict[str, Any]:
        """Per scope: items seen, live clusters by status, size warnings, reconsolidation
        runs, drifts, members held in memory."""
        out: dict[str, Any] = {}
        for st in self.scopes.values():
            live = st.live_slots()
            out[st.name] = {
                "items": st.seq,
                "dimension": st.dim,
                "active": int((st.status[live] == ACTIVE).sum()),
                "candidates": int((st.status[live] != ACTIVE).sum()),
                "size_warnings": st.size_warnings,
                "reconsolidations": st.recon_runs,
                "drifts": st.drifts,
                "members_in_memory": len(st.item_slot),
                "slot_capacity": st.cap,
            }
        return out


def _cluster_state(st: ScopeState, cid: str, merged: bool) -> ClusterState:
    etype = st.key.embedding_type
    slot = st.slot_for(cid)
    if slot is None:
        gone: ClusterStatusName = "merged" if merged else "retired"
        return ClusterState(cid, st.name, etype, gone, 0, 0.0, None, None, None)
    return ClusterState(
        cid,
        st.name,
        etype,
        STATUS_NAMES[int(st.status[slot])],
        len(st.members[slot]),
        float(st.w[slot]),
        float(st.t_first[slot]),
        float(st.t_last[slot]),
        st.centroids.of(slot).copy(),
    )
