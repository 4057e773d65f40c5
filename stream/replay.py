"""`clusterer replay`: the engine over files, exactly as the service would run it.

One difference is deliberate and switchable. A file has an end, a live stream has not: by
default replay closes the stream with `Engine.flush()`, which applies a reconsolidation
still computing and runs maintenance (fading, retirement, merges) over the last items. A
running service reaches that point only when its next items arrive, so on the same input
the two differ on the last ~`tick_items` items of each scope. `live=True`
(`clusterer replay --as-live`) skips the final pass and ends exactly where a service that
has consumed the same records stands.
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from processors import Batch, ClustererError, Engine, EngineConfig, ScopeKey
from schemas.validation import InputError, check_matrix
from stream.labels import LabelTracker


class ReplayInputError(ClustererError):
    """A bad input file: reported as one line and exit code 2."""


@dataclass
class ReplayInputs:
    vectors: npt.NDArray[np.float32]
    times: npt.NDArray[np.float64]
    ids: list[str]
    metadata: list[dict[str, Any] | None] | None


def _load_npy(path: Path, what: str) -> npt.NDArray[Any]:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise ReplayInputError(f"{what} file not found: {path}") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise ReplayInputError(f"{what} file {path} is not a readable .npy array: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise ReplayInputError(f"{what} file {path} does not hold a single array")
    return arr


def load_config(path: Path | None) -> EngineConfig:
    if path is None:
        return EngineConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReplayInputError(f"config file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ReplayInputError(f"config file {path} is not valid TOML: {exc}") from exc
    table = data.get("engine", data)
    if not isinstance(table, dict):
        raise ReplayInputError(f"config file {path}: [engine] must be a table")
    try:
        return EngineConfig.from_mapping(table)
    except (TypeError, ValueError) as exc:
        raise ReplayInputError(f"config file {path}: {exc}") from exc


def load_inputs(
    vectors: Path, timestamps: Path | None, ids: Path | None, metadata: Path | None
) -> ReplayInputs:
    raw = _load_npy(vectors, "vectors")
    try:
        mat = check_matrix(raw)
    except InputError as exc:
        raise ReplayInputError(f"vectors file {vectors}: {exc.detail}") from exc
    n = mat.shape[0]
    if timestamps is not None:
        t = _load_npy(timestamps, "timestamps")
        if t.ndim != 1 or t.shape[0] != n:
            raise ReplayInputError(
                f"timestamps file {timestamps} has shape {t.shape}, expected ({n},)"
            )
        if not np.issubdtype(t.dtype, np.number) or not np.isfinite(t.astype(np.float64)).all():
            raise ReplayInputError(
                f"timestamps file {timestamps} holds non-finite or non-numeric values"
            )
        times = t.astype(np.float64)
    else:
        times = np.arange(n, dtype=np.float64)
    if ids is not None:
        try:
            names = ids.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise ReplayInputError(f"ids file not found: {ids}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ReplayInputError(f"ids file {ids} is unreadable: {exc}") from exc
        if len(names) != n:
            raise ReplayInputError(f"ids file {ids} has {len(names)} lines, vectors has {n} rows")
        if any(not s.strip() for s in names):
            raise ReplayInputError(f"ids file {ids} has an empty id")
        if len(set(names)) != n:
            raise ReplayInputError(f"ids file {ids} repeats an id; ids must be unique")
    else:
        names = [str(i) for i in range(n)]
    metas: list[dict[str, Any] | None] | None = None
    if metadata is not None:
        metas = []
        try:
            with metadata.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ReplayInputError(
                            f"metadata file {metadata} line {lineno} is not JSON: {exc.msg}"
                        ) from exc
                    if not isinstance(obj, dict):
                        raise ReplayInputError(
                            f"metadata file {metadata} line {lineno} is not a JSON object"
                        )
                    metas.append(obj)
        except FileNotFoundError as exc:
            raise ReplayInputError(f"metadata file not found: {metadata}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ReplayInputError(f"metadata file {metadata} is unreadable: {exc}") from exc
        if len(metas) != n:
            raise ReplayInputError(
                f"metadata file {metadata} has {len(metas)} lines, vectors has {n} rows"
            )
    return ReplayInputs(mat, times, names, metas)


@dataclass
class ReplayOutput:
    labels: npt.NDArray[np.int64]
    cluster_ids: list[str | None]
    engine: Engine
    size_warnings: int = 0
    """clusters that passed `size_warning` members during the run (aggregated, not logged)."""


def run(
    inputs: ReplayInputs,
    config: EngineConfig,
    scope: ScopeKey,
    batch_size: int = 1024,
    assignments_out: IO[str] | None = None,
    progress: bool = False,
    live: bool = False,
) -> ReplayOutput:
    """Replay the inputs in batches of `batch_size` (the batching never changes the result).
    `live`: no final maintenance pass (module docstring), as a running service."""
    engine = Engine(config)
    warned = 0
    tracker = LabelTracker()
    n = inputs.vectors.shape[0]
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        res = engine.learn(
            Batch(
                inputs.vectors[start:end],
                inputs.ids[start:end],
                inputs.times[start:end],
                metadata=inputs.metadata[start:end] if inputs.metadata is not None else None,
                scopes=[scope] * (end - start),
            )
        )
        for item, cid in zip(res.item_ids, res.cluster_ids, strict=True):
            tracker.assigned(item, cid)
        tracker.apply(res.changes)
        warned += len(res.size_warnings)
        if assignments_out is not None:
            for a in res.assignments():
                assignments_out.write(a.model_dump_json() + "\n")
        if progress:
            done = end * 40 // n
            sys.stderr.write(f"\r[{'#' * done}{'.' * (40 - done)}] {end}/{n}")
            sys.stderr.flush()
    if not live:
        tracker.apply(engine.flush().changes)
    if progress:
        sys.stderr.write("\n")
    finals = [tracker.final(item) for item in inputs.ids]
    numbering: dict[str, int] = {}
    labels = np.full(n, -1, dtype=np.int64)
    for i, final in enumerate(finals):
        if final is not None:
            labels[i] = numbering.setdefault(final, len(numbering))
    return ReplayOutput(labels, finals, engine, warned)
