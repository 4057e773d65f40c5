"""Reconsolidation of a scope with HDBSCAN over cluster centroids and member reservoirs.

HDBSCAN finds the density structure; the MONIC mapping (processors/monic.py) turns it into
transitions that keep ids stable. Two guards stop HDBSCAN's single-linkage tree from chaining
distinct stories together (measured on News-T: unguarded merging of HDBSCAN groups fell to
NMI 0.23-0.54): an absorption happens only when the clusters' mean member similarity reaches
merge_threshold, and a split only when its parts' mean similarity stays below it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.cluster import HDBSCAN

from processors.lifecycle import avg_link
from processors.monic import Transitions, map_transitions
from processors.scope import ACTIVE, ScopeState
from schemas.outputs import ReconsolidationGroup, ReconsolidationRecord

Trigger = Literal["items", "event_time", "drift", "manual"]


@dataclass
class Job:
    """Everything a run needs, copied out of the scope when it starts: the points, their
    owners by cluster number (slots may be reused before the result is applied) and the
    owners' weights. `labels` is filled by `compute`, in the background or inline."""

    record: ReconsolidationRecord
    pts: npt.NDArray[np.float32]
    owner: list[int]
    item: list[str | None]
    weight: dict[int, float]
    min_cluster_size: int
    min_samples: int
    labels: npt.NDArray[np.int64] | None = None

    def export(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """The inputs of a started run, for checkpoints. `labels` are left out: they are a
        pure function of the inputs, and leaving them out keeps a checkpoint's bytes
        independent of whether the background thread had finished."""
        ids = sorted(self.weight)
        fields: dict[str, Any] = {
            "record": self.record.model_dump(mode="json"),
            "item": self.item,
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
        }
        arrays: dict[str, npt.NDArray[Any]] = {
            "pts": self.pts,
            "owner": np.asarray(self.owner, dtype=np.int64),
            "weight_ids": np.asarray(ids, dtype=np.int64),
            "weights": np.asarray([self.weight[c] for c in ids], dtype=np.float64),
        }
        return fields, arrays

    @classmethod
    def restore(cls, fields: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Job:
        return cls(
            ReconsolidationRecord.model_validate(fields["record"]),
            np.array(arrays["pts"], dtype=np.float32),
            arrays["owner"].tolist(),
            list(fields["item"]),
            dict(zip(arrays["weight_ids"].tolist(), arrays["weights"].tolist(), strict=True)),
            int(fields["min_cluster_size"]),
            int(fields["min_samples"]),
        )


def _points(scope: ScopeState) -> tuple[npt.NDArray[np.float32], list[int], list[str | None]]:
    """Centroids of the active clusters first, then reservoir members round-robin up to the
    point budget: owner cluster number and member item id (None for a centroid) per point."""
    live = [int(s) for s in scope.live_slots() if scope.status[s] == ACTIVE]
    live.sort(key=lambda s: int(scope.cid[s]))
    budget = max(scope.cfg.max_reconsolidation_points, len(live))
    rows: list[npt.NDArray[np.float32]] = [scope.centroids.of(s) for s in live]
    owner = [int(scope.cid[s]) for s in live]
    item: list[str | None] = [None] * len(live)
    for p in range(scope.cfg.reservoir_size):
        for s in live:
            if len(rows) >= budget:
                break
            rid = scope.res_ids[s][p]
            if rid is not None:
                rows.append(scope.res_vec[s, p])
                owner.append(int(scope.cid[s]))
                item.append(rid)
    mat = np.vstack(rows).astype(np.float32) if rows else np.zeros((0, scope.dim), np.float32)
    return mat, owner, item


def prepare(scope: ScopeState, trigger: Trigger) -> Job:
    """Start a run: reset the triggers and copy the inputs. The record says `skipped` when
    the scope has too few clusters; such a job needs no computation."""
    cfg = scope.cfg
    scope.recon_runs += 1
    scope.items_since_recon = 0
    scope.last_recon_time = scope.watermark
    scope.drift_pending = False
    params = {
        "algorithm": "hdbscan",
        "min_cluster_size": cfg.hdbscan_min_cluster_size,
        "min_samples": cfg.hdbscan_min_samples,
        "metric": "euclidean on unit vectors (sqrt(2-2cos))",
        "survival_fraction": cfg.survival_fraction,
        "split_fraction": cfg.split_fraction,
        "merge_threshold": cfg.merge_threshold,
        "max_points": cfg.max_reconsolidation_points,
        "started_at_sequence": scope.seq,
    }
    pts, owner, item = _points(scope)
    n_clusters = len(set(owner))
    record = ReconsolidationRecord(
        scope=scope.name,
        sequence=scope.recon_runs,
        trigger=trigger,
        event_time=scope.watermark,
        parameters=params,
        input_clusters=n_clusters,
        input_points=len(owner),
        clusters_found=0,
        outliers=0,
    )
    if n_clusters < cfg.min_reconsolidation_clusters or len(owner) <= cfg.hdbscan_min_cluster_size:
        record.skipped = (
            f"{n_clusters} active clusters, {len(owner)} points: below the minimum of "
            f"{cfg.min_reconsolidation_clusters} clusters to reconsolidate"
        )
    weight = {c: float(scope.w[scope.slot_of[c]]) for c in set(owner)}
    return Job(
        record, pts, owner, item, weight, cfg.hdbscan_min_cluster_size, cfg.hdbscan_min_samples
    )


def compute(job: Job) -> Job:
    """HDBSCAN over the job's points: a pure function of the job, safe in another thread."""
    if job.record.skipped is None and job.labels is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            job.labels = (
                HDBSCAN(
                    min_cluster_size=job.min_cluster_size,
                    min_samples=job.min_samples,
                    algorithm="brute",
                    copy=False,  # the job's float64 copy is private
                )
                .fit(job.pts.astype(np.float64))
                .labels_.astype(np.int64)
            )
    return job


def apply(scope: ScopeState, job: Job) -> ReconsolidationRecord:
    """Map the grouping onto the clusters as they are now (some may have merged or retired
    since the job started: their points are ignored) and record the run."""
    cfg = scope.cfg
    record = job.record
    compute(job)
    if record.skipped is not None or job.labels is None:
        return record
    labels, owner, item, pts = job.labels, job.owner, job.item, job.pts
    record.clusters_found = int(labels.max() + 1) if labels.size else 0
    record.outliers = int((labels < 0).sum())
    record.groups = _describe_groups(scope, pts, labels, owner, item)
    overlap: dict[int, dict[int, float]] = {}
    counts: dict[int, int] = {}
    for c in owner:
        counts[c] = counts.get(c, 0) + 1
    for c, g in zip(owner, labels, strict=True):
        if c not in scope.slot_of:
            continue
        row = overlap.setdefault(c, {})
        row[int(g)] = row.get(int(g), 0.0) + 1.0 / counts[c]
    weight = {c: job.weight[c] for c in overlap}
    tr = map_transitions(overlap, weight, cfg.survival_fraction, cfg.split_fraction)
    record.transitions = _apply(scope, tr, pts, labels, owner, item)
    return record


def reconsolidate(scope: ScopeState, trigger: Trigger) -> ReconsolidationRecord:
    """A whole run at once (manual runs, tests); the engine defers `apply` instead."""
    return apply(scope, compute(prepare(scope, trigger)))


def _describe_groups(
    scope: ScopeState,
    pts: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    owner: list[int],
    item: list[str | None],
) -> list[ReconsolidationGroup]:
    groups = []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for idx in np.split(order, bounds) if order.size else []:
        g = int(labels[idx[0]])
        cids = sorted({scope.cluster_name(owner[i]) for i in idx})
        if g < 0:
            groups.append(
                ReconsolidationGroup(
                    label=-1,
                    size=int(idx.size),
                    medoid_id=None,
                    mean_intra_similarity=None,
                    cluster_ids=cids,
                )
            )
            continue
        sub = pts[idx].astype(np.float64)
        sims = sub @ sub.T
        n = idx.size
        mean_sim = float((sims.sum() - np.trace(sims)) / (n * (n - 1))) if n > 1 else 1.0
        members = [j for j, i in enumerate(idx) if item[i] is not None]
        medoid = None
        if members:
            tot = sims[members].sum(axis=1)
            best = max(range(len(members)), key=lambda m: (tot[m], str(item[idx[members[m]]])))
            medoid = item[idx[members[best]]]
        groups.append(
            ReconsolidationGroup(
                label=g,
                size=int(n),
                medoid_id=medoid,
                mean_intra_similarity=mean_sim,
                cluster_ids=cids,
            )
        )
    return groups


def _apply(
    scope: ScopeState,
    tr: Transitions,
    pts: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    owner: list[int],
    item: list[str | None],
) -> dict[str, int]:
    thr = scope.cfg.merge_threshold
    done = {"survived": 0, "absorbed": 0, "split": 0, "unmatched": len(tr.unmatched), "guarded": 0}
    for absorber_id, absorbed in tr.absorptions:
        for other in absorbed:
            a = scope.slot_of.get(absorber_id)
            b = scope.slot_of.get(other)
            if a is None or b is None:
                continue
            if avg_link(scope, a, b) >= thr:
                kept = scope.fold(a, b, reason="reconsolidation")
                absorber_id = int(scope.cid[kept])
                done["absorbed"] += 1
            else:
                done["guarded"] += 1
    for old_id, parts in tr.splits:
        target = scope.slot_of.get(old_id)
        if target is None:
            continue
        if _split(scope, target, parts, pts, labels, owner, item):
            done["split"] += 1
        else:
            done["guarded"] += 1
    done["survived"] = len(tr.survived) - done["absorbed"]
    return done


def _split(
    scope: ScopeState,
    slot: int,
    parts: list[int],
    pts: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    owner: list[int],
    item: list[str | None],
) -> bool:
    number = int(scope.cid[slot])
    mine = [i for i, c in enumerate(owner) if c == number]
    part_rows = {g: [i for i in mine if labels[i] == g] for g in parts}
    means = {g: pts[rows].astype(np.float64).mean(axis=0) for g, rows in part_rows.items()}
    keep = parts[0]
    for g in parts[1:]:
        if float(means[keep] @ means[g]) >= scope.cfg.merge_threshold:
            return False
    total = len(mine)
    scope.unfold(
        slot,
        [(len(part_rows[g]) / total, means[g], [item[i] for i in part_rows[g]]) for g in parts[1:]],
    )
    return True
