"""Reading Stage 3's index directory (seed 003, sections 2.1-2.3): up to four FAISS flat
indices (`documents.index`, `events.index`, `entities.index`, `storylines.index`), each with
`<name>_metadata.json` holding `metadata_store`, `id_map` and `reverse_id_map`.

Everything is checked when the directory is opened, before a single event leaves: a bad
directory raises `Stage3Error` with one line that names the file and what is wrong. Indices
are memory-mapped (`IO_FLAG_MMAP_IFC`), so their vectors live in the page cache, not in a
second copy in this process; vectors are read back in chunks, in event-time order.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from schemas.inputs import granularity_time, to_epoch_seconds
from schemas.validation import DEFAULT_LIMITS

INDEX_NAMES: dict[str, str] = {
    "documents": "document",
    "events": "event",
    "entities": "entity",
    "storylines": "storyline",
}
"""File stem -> embedding type, in the order items of equal time are emitted."""

MODEL_KEYS = ("model_name", "embedding_model")
"""Metadata keys that name the embedding model of a vector (else `--model`)."""

CHUNK = 4096


class Stage3Error(Exception):
    """A bad Stage 3 directory: reported as one line (and exit code 2 by the CLI)."""


@dataclass(frozen=True)
class Stage3Item:
    """One vector of the directory as the clusterer sees it: `item_id` is Stage 3's
    `vector_id`; `source_id` (the document, event, entity or storyline id) is kept."""

    item_id: str
    source_id: str
    document_id: str | None
    embedding_type: str
    embedding_model: str
    event_time: float
    metadata: dict[str, Any]
    vector: npt.NDArray[np.float32]

    def vector_event(self) -> dict[str, Any]:
        """The per-vector `VectorEvent` (schemas/inputs.py) as JSON-ready data, vector in
        base64 little-endian float32."""
        from stream.synthetic import b64

        return {
            "item_id": self.item_id,
            "document_id": self.document_id,
            "embedding_type": self.embedding_type,
            "embedding_model": self.embedding_model,
            "event_time": self.event_time,
            "metadata": self.metadata,
            "vector": b64(self.vector),
        }


@dataclass
class Stage3Index:
    """One index file with its metadata, per FAISS position."""

    name: str
    embedding_type: str
    path: Path
    index: Any
    dim: int
    vector_ids: list[str]
    source_ids: list[str]
    document_ids: list[str | None]
    metadata: list[dict[str, Any]]
    models: list[str]
    times: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    untimed: int = 0

    def __len__(self) -> int:
        return len(self.vector_ids)

    def order(self, positions: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.int64]:
        """Positions (all, or the given ones) by event time; equal times keep file order."""
        pos = np.arange(len(self), dtype=np.int64) if positions is None else positions
        return pos[np.lexsort((pos, self.times[pos]))]

    def read(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        if positions.size == 0:
            return np.zeros((0, self.dim), np.float32)
        if np.all(np.diff(positions) == 1):  # a run of positions: one contiguous read
            start = int(positions[0])
            return np.asarray(self.index.reconstruct_n(start, int(positions.size)), np.float32)
        return np.asarray(self.index.reconstruct_batch(positions), np.float32)

    def matrix(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The vectors at `positions`, in that order: one (n, d) array filled in chunks, the
        only copy this process makes."""
        out = np.empty((positions.size, self.dim), np.float32)
        for s in range(0, positions.size, CHUNK):
            out[s : s + CHUNK] = self.read(positions[s : s + CHUNK])
        return out

    def item(self, pos: int, vector: npt.NDArray[np.float32]) -> Stage3Item:
        meta = {**self.metadata[pos], "source_id": self.source_ids[pos]}
        return Stage3Item(
            item_id=self.vector_ids[pos],
            source_id=self.source_ids[pos],
            document_id=self.document_ids[pos],
            embedding_type=self.embedding_type,
            embedding_model=self.models[pos],
            event_time=float(self.times[pos]),
            metadata=meta,
            vector=vector,
        )

    def items(self) -> Iterator[Stage3Item]:
        """Every vector of the index in event-time order, read in chunks."""
        order = self.order()
        for s in range(0, order.size, CHUNK):
            part = order[s : s + CHUNK]
            vecs = self.read(part)
            for k, pos in enumerate(part.tolist()):
                yield self.item(pos, vecs[k])


@dataclass
class Stage3Directory:
    path: Path
    indices: list[Stage3Index]

    def __len__(self) -> int:
        return sum(len(ix) for ix in self.indices)

    @property
    def untimed(self) -> int:
        return sum(ix.untimed for ix in self.indices)

    def counts(self) -> dict[str, int]:
        return {ix.embedding_type: len(ix) for ix in self.indices}

    def items(self) -> Iterator[Stage3Item]:
        """All vectors of all indices merged in event-time order (documents first at equal
        times, then events, entities, storylines; file order within an index)."""
        rank = {t: r for r, t in enumerate(INDEX_NAMES.values())}
        streams = [
            ((it.event_time, rank[it.embedding_type], n, it) for n, it in enumerate(ix.items()))
            for ix in self.indices
        ]
        for _, _, _, it in heapq.merge(*streams, key=lambda e: e[:3]):
            yield it

    def scopes(self) -> Iterator[tuple[tuple[str, str], Stage3Index, npt.NDArray[np.int64]]]:
        """((embedding type, model), index, positions in event-time order) per scope."""
        for ix in self.indices:
            for model in sorted(set(ix.models)):
                mask = np.fromiter((m == model for m in ix.models), bool, len(ix))
                yield (ix.embedding_type, model), ix, ix.order(np.flatnonzero(mask))


# --------------------------------------------------------------------------- opening
def _faiss_message(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", text)


def _read_index(path: Path) -> Any:
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        raise Stage3Error(f"cannot read {path.name}: {_faiss_message(exc)}") from exc
    # read_index hands back the concrete class (and owns it: no downcast, which would
    # leave a wrapper that outlives its owner)
    if not isinstance(index, faiss.IndexFlat):
        raise Stage3Error(
            f"{path.name} is a {type(index).__name__}, which cannot give its vectors back "
            "exactly; only flat indices (IndexFlatIP, IndexFlatL2) are read"
        )
    return index


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise Stage3Error(f"{path.name} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise Stage3Error(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise Stage3Error(f"{path.name} is not a JSON object")
    for key in ("metadata_store", "id_map", "reverse_id_map"):
        if not isinstance(data.get(key), dict):
            raise Stage3Error(f"{path.name} has no '{key}' object")
    return data


def _positions(meta_name: str, data: dict[str, Any], n: int, index_name: str) -> list[str]:
    """vector_id per position, checking id_map, reverse_id_map and metadata_store agree with
    each other and with the index."""
    id_map: dict[str, Any] = data["id_map"]
    reverse: dict[str, Any] = data["reverse_id_map"]
    store: dict[str, Any] = data["metadata_store"]
    if len(id_map) != n:
        raise Stage3Error(
            f"{meta_name}: id_map has {len(id_map)} entries, {index_name} holds {n} vectors"
        )
    by_pos: list[str | None] = [None] * n
    for vid, pos in id_map.items():
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < n:
            raise Stage3Error(
                f"{meta_name}: id_map gives vector {vid!r} position {pos!r}, "
                f"outside 0..{n - 1} of {index_name}"
            )
        if by_pos[pos] is not None:
            raise Stage3Error(
                f"{meta_name}: id_map gives position {pos} to both {by_pos[pos]!r} and {vid!r}"
            )
        by_pos[pos] = vid
    if len(reverse) != n:
        raise Stage3Error(f"{meta_name}: reverse_id_map has {len(reverse)} entries, id_map has {n}")
    for at, placed in enumerate(by_pos):
        if reverse.get(str(at)) != placed:
            raise Stage3Error(
                f"{meta_name}: reverse_id_map[{at}] is {reverse.get(str(at))!r}, "
                f"id_map puts {placed!r} there"
            )
    if len(store) != n or any(vid not in store for vid in by_pos):
        missing = next((v for v in by_pos if v not in store), None)
        if missing is not None:
            raise Stage3Error(f"{meta_name}: metadata_store has no entry for vector {missing!r}")
        extra = next(v for v in store if v not in id_map)
        raise Stage3Error(f"{meta_name}: metadata_store has vector {extra!r}, which id_map lacks")
    return [str(v) for v in by_pos]


def _load_index(
    directory: Path, name: str, model: str | None
) -> tuple[Stage3Index, list[Any], list[str | None]]:
    """The index with its metadata; raw event-time values are returned for the caller to
    resolve (entities need their documents' dates)."""
    kind = INDEX_NAMES[name]
    index_path = directory / f"{name}.index"
    meta_path = directory / f"{name}_metadata.json"
    index = _read_index(index_path)
    data = _read_json(meta_path)
    n = int(index.ntotal)
    vector_ids = _positions(meta_path.name, data, n, index_path.name)
    store: dict[str, Any] = data["metadata_store"]
    source_ids: list[str] = []
    document_ids: list[str | None] = []
    metas: list[dict[str, Any]] = []
    models: list[str] = []
    for vid in vector_ids:
        entry = store[vid]
        where = f"{meta_path.name}: metadata_store[{vid!r}]"
        if not isinstance(entry, dict):
            raise Stage3Error(f"{where} is not an object")
        src = entry.get("source_id")
        if not isinstance(src, str) or not src:
            raise Stage3Error(f"{where} has no source_id")
        etype = entry.get("embedding_type", kind)
        if etype != kind:
            raise Stage3Error(
                f"{where} has embedding_type {etype!r}, {index_path.name} holds {kind}s"
            )
        meta = entry.get("metadata", {})
        if not isinstance(meta, dict):
            raise Stage3Error(f"{where}.metadata is not an object")
        m = next((meta[k] for k in MODEL_KEYS if isinstance(meta.get(k), str) and meta[k]), model)
        if m is None:
            raise Stage3Error(
                f"{where} names no embedding model (metadata.model_name) and no --model was given"
            )
        doc = src if kind == "document" else meta.get("document_id")
        source_ids.append(src)
        document_ids.append(str(doc) if isinstance(doc, str | int) and doc != "" else None)
        metas.append(meta)
        models.append(m)
    raw_times = [granularity_time(kind, meta) for meta in metas]
    ix = Stage3Index(
        name, kind, index_path, index, int(index.d), vector_ids, source_ids, document_ids, metas,
        models,
    )  # fmt: skip
    return ix, raw_times, document_ids


def _epoch(value: Any, where: str) -> float:
    try:
        t = to_epoch_seconds(value)
    except ValueError as exc:
        raise Stage3Error(f"{where}: {exc}") from exc
    if not np.isfinite(t):
        raise Stage3Error(f"{where}: event time {value!r} is not finite")
    return t


def _check_vectors(ix: Stage3Index, tolerance: float) -> None:
    for s in range(0, len(ix), CHUNK):
        pos = np.arange(s, min(s + CHUNK, len(ix)), dtype=np.int64)
        x = ix.read(pos).astype(np.float64)
        finite = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
        norms = np.linalg.norm(np.where(np.isfinite(x), x, 0.0), axis=1)
        bad = ~finite | (np.abs(norms - 1.0) > tolerance)
        if bad.any():
            k = int(np.argmax(bad))
            p = int(pos[k])
            what = (
                "holds NaN or infinite values"
                if not bool(finite[k])
                else f"has norm {float(norms[k]):.6g}"
            )
            raise Stage3Error(
                f"{ix.path.name}: vector {ix.vector_ids[p]!r} (position {p}) {what}; "
                f"Stage 3 vectors are L2-normalised (tolerance {tolerance:g})"
            )


def open_directory(
    path: Path, model: str | None = None, norm_tolerance: float = DEFAULT_LIMITS.norm_tolerance
) -> Stage3Directory:
    """Open and check a Stage 3 directory; any subset of the four indices may be present.

    Event times per type follow `schemas.inputs.granularity_time` (documents: publication
    date; events: temporal reference, else the document's date; storylines: end of the
    temporal span; entities: the document's date). The document's date is found through the
    item's `metadata.document_id` in `documents.index` when the item does not carry one. An
    item with no date at all takes the time of the item before it in its index (Stage 3
    writes a document's vectors together), or the earliest time of the directory; `untimed`
    counts them."""
    if not path.is_dir():
        raise Stage3Error(f"{path} is not a directory")
    present = []
    for name in INDEX_NAMES:
        has_index = (path / f"{name}.index").is_file()
        has_meta = (path / f"{name}_metadata.json").is_file()
        if has_index and not has_meta:
            raise Stage3Error(f"{name}.index has no {name}_metadata.json next to it")
        if has_meta and not has_index:
            raise Stage3Error(f"{name}_metadata.json has no {name}.index next to it")
        if has_index:
            present.append(name)
    if not present:
        raise Stage3Error(
            f"{path} holds no Stage 3 index (documents.index, events.index, entities.index, "
            "storylines.index with their _metadata.json)"
        )
    loaded = [_load_index(path, name, model) for name in present]

    dims: dict[str, tuple[int, str]] = {}
    for ix, _, _ in loaded:
        for m in sorted(set(ix.models)):
            d, seen_in = dims.setdefault(m, (ix.dim, ix.path.name))
            if d != ix.dim:
                raise Stage3Error(
                    f"mixed dimensions for model {m!r}: {seen_in} has {d}, {ix.path.name} has "
                    f"{ix.dim}"
                )

    doc_time: dict[str, float] = {}
    for ix, raw, _ in loaded:
        if ix.embedding_type == "document":
            for p, value in enumerate(raw):
                if value is not None:
                    doc_time[ix.source_ids[p]] = _epoch(
                        value, f"{ix.name}_metadata.json: vector {ix.vector_ids[p]!r}"
                    )
    resolved: list[list[float | None]] = []
    for ix, raw, docs in loaded:
        ts: list[float | None] = []
        for p, value in enumerate(raw):
            if value is not None:
                ts.append(_epoch(value, f"{ix.name}_metadata.json: vector {ix.vector_ids[p]!r}"))
            else:
                doc = docs[p]
                ts.append(doc_time.get(doc) if doc is not None else None)
        resolved.append(ts)
    known = [w for ts in resolved for w in ts if w is not None]
    if not known and any(resolved):
        raise Stage3Error(
            f"{path}: no vector has a date (publication_date, temporal_reference, temporal_span)"
        )
    earliest = min(known) if known else 0.0
    indices = []
    for (ix, _, _), ts in zip(loaded, resolved, strict=True):
        first = next((w for w in ts if w is not None), earliest)
        last = first
        out = np.empty(len(ts), np.float64)
        for p, when in enumerate(ts):
            if when is None:
                ix.untimed += 1
                out[p] = last
            else:
                out[p] = last = when
        ix.times = out
        _check_vectors(ix, norm_tolerance)
        indices.append(ix)
    return Stage3Directory(path, indices)
