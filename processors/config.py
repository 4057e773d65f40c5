"""Engine configuration. Every limit lives here, with defaults chosen on News-T and the
synthetic drift stream (see docs/benchmarks.md); none is specific to one data set."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import ConfigError

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
    same exact search through numpy's BLAS; about as fast as FAISS on CPUs since FAISS
    searches every segment as one BLAS product, docs/benchmarks.md run 9)."""
    search_threads: int = 1
    """OpenMP threads of the FAISS search, and BLAS threads of the engine's products while
    an engine call runs (processors/search.py `blas_threads`). Segment products are small;
    with more threads FAISS's OpenMP pool and the BLAS threads fight over the cores
    (measured: 2.8x slower searches with 2 threads, and the whole engine 2.7x slower with
    numpy's default BLAS threads, on the 2-core machine, docs/benchmarks.md). 0 = the
    libraries' defaults."""

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

    def __post_init__(self) -> None:
        """Every field is checked here, so a bad value (a TOML string, `2.5` items, a string
        where a tuple belongs) fails at construction with the field's name, never as a
        TypeError deep in the engine. Numbers are normalised: an integral float is accepted
        for an int field, an int for a float field."""
        set_ = functools.partial(object.__setattr__, self)
        set_("scope_fields", _scope_fields(self.scope_fields))
        for name, (kind, low, high, low_open) in _RANGES.items():
            value = getattr(self, name)
            value = _integer(name, value) if kind is int else _real(name, value)
            if value < low or (low_open and value == low) or (high is not None and value > high):
                raise ConfigError(f"engine setting {name} must be {_describe(low, high, low_open)}")
            set_(name, value)
        if self.search_backend not in ("faiss", "numpy"):
            raise ConfigError('engine setting search_backend must be "faiss" or "numpy"')
        if self.retire_weight >= self.min_weight:
            raise ConfigError("engine setting retire_weight must be below min_weight")
        if not isinstance(self.extra, dict):
            raise ConfigError("engine setting extra must be a table")

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> EngineConfig:
        """Build from a TOML table; unknown keys are an error so typos never pass silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown engine settings: {', '.join(unknown)}")
        return cls(**data)

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of `from_mapping` (plain JSON types), e.g. for checkpoints."""
        out = dataclasses.asdict(self)
        out["scope_fields"] = list(self.scope_fields)
        return out


# field: (int or float, lowest, highest (None: unbounded), lowest excluded)
_RANGES: dict[str, tuple[type, float, float | None, bool]] = {
    "assign_threshold": (float, 0.0, 1.0, True),
    "tau_seconds": (float, 0.0, None, True),
    "search_k": (int, 1, None, False),
    "search_threads": (int, 0, None, False),
    "half_life_seconds": (float, 0.0, None, True),
    "min_weight": (float, 0.0, None, True),
    "retire_weight": (float, 0.0, None, False),
    "max_clusters_per_scope": (int, 1, None, False),
    "tick_items": (int, 1, None, False),
    "tick_seconds": (float, 0.0, None, True),
    "merge_threshold": (float, 0.0, 1.0, True),
    "size_warning": (int, 1, None, False),
    "reconsolidate_items": (int, 1, None, False),
    "reconsolidate_seconds": (float, 0.0, None, True),
    "reconsolidate_delay_items": (int, 0, None, False),
    "drift_block": (int, 1, None, False),
    "drift_delta": (float, 0.0, 1.0, True),
    "min_reconsolidation_clusters": (int, 1, None, False),
    "reservoir_size": (int, 1, None, False),
    "hdbscan_min_cluster_size": (int, 2, None, False),
    "hdbscan_min_samples": (int, 1, None, False),
    "max_reconsolidation_points": (int, 1, None, False),
    "split_fraction": (float, 0.0, 1.0, True),
    "survival_fraction": (float, 0.0, 1.0, True),
    "representatives_k": (int, 1, None, False),
    "label_terms": (int, 0, None, False),
    "max_snapshot_members": (int, 0, None, False),
}


def _describe(low: float, high: float | None, low_open: bool) -> str:
    if high is None:
        return f"{'above' if low_open else 'at least'} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}]"


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"engine setting {name} must be an integer, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ConfigError(f"engine setting {name} must be an integer, got {value!r}")
    return int(value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"engine setting {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"engine setting {name} must be finite, got {value!r}")
    return float(value)


def _scope_fields(value: Any) -> tuple[str, ...]:
    """A single name is one field (`"domain"`, not six one-letter fields)."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(
        isinstance(n, str) and n.strip() for n in names
    ):
        raise ConfigError(
            f"engine setting scope_fields must be a list of metadata field names, got {value!r}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"engine setting scope_fields repeats a name: {value!r}")
    return tuple(names)
