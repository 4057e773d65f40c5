"""Engine configuration. Every limit lives here, with defaults chosen on News-T and the
synthetic drift stream (see docs/benchmarks.md); none is specific to one data set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DAY = 86_400.0


@dataclass(frozen=True)
class EngineConfig:
    # --- scopes
    scope_fields: tuple[str, ...] = ()
    """metadata fields that split a (type, model) space further, e.g. ("domain",)."""

    # --- assignment
    assign_threshold: float = 0.58
    """weighted cosine needed to join a cluster; below it the item opens a candidate."""
    tau_seconds: float = 7 * DAY
    """temporal closeness exp(-|dt|/tau) between the item and the cluster's last activity."""
    search_k: int = 8
    """nearest centroids fetched per item; more only matter at exact ties."""
    search_backend: str = "faiss"
    """"faiss" (the centroid index; on a GPU when faiss sees one) or "numpy" (CPU only: the
    same exact search through numpy's BLAS, ~5x faster than the faiss-cpu wheel's bundled
    BLAS on the benchmark machine, docs/benchmarks.md)."""
    search_threads: int = 1
    """OpenMP threads of the FAISS search. Segment searches are small; with more threads
    FAISS's OpenMP pool and numpy's BLAS threads fight over the cores (measured: 2.8x slower
    searches with 2 threads on the 2-core machine, docs/benchmarks.md). 0 = FAISS default."""

    # --- lifecycle
    half_life_seconds: float = 2 * DAY
    """cluster weights halve after this much event time without new members."""
    min_weight: float = 3.0
    """a candidate becomes a real cluster (event `created`) at this weight."""
    retire_weight: float = 0.25
    """an active cluster, or a candidate, fading below this weight leaves the index."""
    max_clusters_per_scope: int = 20_000
    """hard cap: the lightest clusters retire first when it is passed."""
    tick_items: int = 1024
    """maintenance (decay sweep, retirement, merges, update events) runs every this many
    items of a scope. Average-link merges decided on grown clusters are better than on young
    ones: on News-T 256 -> 1,024 raised NMI by 0.004 on both sets and precision by 0.01
    (grid in docs/benchmarks.md)."""
    tick_seconds: float = 3600.0
    """... and at the first item this much event time after the last maintenance, so a
    scope that receives few items still merges and retires on time."""
    merge_threshold: float = 0.32
    """two clusters merge when their average member-to-member cosine reaches this."""
    size_warning: int = 50

    # --- reconsolidation
    reconsolidate_items: int = 20_000
    reconsolidate_seconds: float = 1 * DAY
    reconsolidate_delay_items: int = 16_384
    """items of the scope between the start of a run and the moment its result is applied
    (rounded up to tick_items). HDBSCAN runs in the background meanwhile; assignment waits
    for it only if this many items arrive first. 0 = run inline."""
    drift_block: int = 64
    """items per new-cluster-rate sample fed to the ADWIN drift detector."""
    drift_delta: float = 0.002
    min_reconsolidation_clusters: int = 10
    reservoir_size: int = 8
    hdbscan_min_cluster_size: int = 5
    hdbscan_min_samples: int = 3
    max_reconsolidation_points: int = 5_000
    """point budget of one HDBSCAN run: centroids first, then reservoir members round-robin.
    HDBSCAN is quadratic in points; 5,000 keeps a run under ~1 s here (6,000 took 2.6 s,
    docs/benchmarks.md). A scope with more active clusters still uses all its centroids."""
    split_fraction: float = 0.3
    """MONIC: each part of a split holds at least this share of the old cluster."""
    survival_fraction: float = 0.7

    # --- representatives
    representatives_k: int = 5
    label_terms: int = 4
    max_snapshot_members: int = 100_000

    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> EngineConfig:
        """Build from a TOML table; unknown keys are an error so typos never pass silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown engine settings: {', '.join(unknown)}")
        values = dict(data)
        if "scope_fields" in values:
            values["scope_fields"] = tuple(values["scope_fields"])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not 0.0 < self.assign_threshold <= 1.0:
            raise ValueError("assign_threshold must be in (0, 1]")
        if self.reconsolidate_delay_items < 0:
            raise ValueError("reconsolidate_delay_items must be 0 or more")
        if self.search_backend not in ("faiss", "numpy"):
            raise ValueError('search_backend must be "faiss" or "numpy"')
        if self.search_threads < 0:
            raise ValueError("search_threads must be 0 (FAISS default) or more")
        if not 0.0 < self.merge_threshold <= 1.0:
            raise ValueError("merge_threshold must be in (0, 1]")
        for name in ("tau_seconds", "half_life_seconds", "reconsolidate_seconds", "tick_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.retire_weight >= self.min_weight:
            raise ValueError("retire_weight must be below min_weight")
        for name in (
            "tick_items",
            "search_k",
            "reservoir_size",
            "reconsolidate_items",
            "drift_block",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
