"""`clusterer stage3-fixture`: write a realistic Stage 3 index directory (seed 003,
sections 2.1-2.3) from real document vectors, for tests, the demo and the benchmarks.

Documents come from the rows of a vectors file and an items JSONL (one title per row);
events, entities (with variant mentions) and storylines are derived from each document
vector by `stream.synthetic.Granularities`, the same derivation the synthetic stream uses.
`count` larger than the rows repeats them with fresh ids and later dates (the row order
continues), so a small real set can fill a large directory. Deterministic for a seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from stream.stage3 import INDEX_NAMES
from stream.synthetic import DocumentFamily, Granularities, iso


class FixtureInputError(Exception):
    """A bad input to the generator: one line, exit code 2."""


@dataclass(frozen=True)
class FixtureOptions:
    count: int | None = None
    start_time: float = 1_764_547_200.0  # 2025-12-01T00:00:00Z
    seconds_per_item: float = 60.0
    seed: int = 0
    model: str | None = None
    types: tuple[str, ...] = tuple(INDEX_NAMES)
    events: tuple[int, int] = (2, 4)
    entities: tuple[int, int] = (3, 5)
    storylines: tuple[int, int] = (1, 2)
    source_url: str = "https://news.example/articles/"


class _IndexWriter:
    """One index and its metadata, accumulated in chunks."""

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.index = faiss.IndexFlatIP(dim)
        self.pending: list[npt.NDArray[np.float32]] = []
        self.store: dict[str, Any] = {}
        self.id_map: dict[str, int] = {}

    def add(
        self, vector_id: str, source_id: str, vector: npt.NDArray[Any], meta: dict[str, Any]
    ) -> None:
        if vector_id in self.id_map:
            raise FixtureInputError(f"vector id {vector_id!r} occurs twice")
        self.id_map[vector_id] = len(self.id_map)
        self.store[vector_id] = {
            "source_id": source_id,
            "embedding_type": INDEX_NAMES[self.name],
            "metadata": meta,
        }
        self.pending.append(np.asarray(vector, np.float32))
        if len(self.pending) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.index.add(np.vstack(self.pending))
            self.pending = []

    def write(self, out: Path) -> int:
        self.flush()
        faiss.write_index(self.index, str(out / f"{self.name}.index"))
        data = {
            "metadata_store": self.store,
            "id_map": self.id_map,
            "reverse_id_map": {str(p): v for v, p in self.id_map.items()},
        }
        with (out / f"{self.name}_metadata.json").open("w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
        return len(self.id_map)


def write_directory(
    out: Path,
    vectors: npt.NDArray[Any],
    titles: Sequence[str],
    item_ids: Sequence[str] | None = None,
    options: FixtureOptions = FixtureOptions(),
) -> dict[str, int]:
    """Write the directory; returns the vector count per index written. Document j (in
    time order) is `doc_{j:06d}`, published `start_time + j * seconds_per_item`, from row
    `j % rows`."""
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise FixtureInputError(f"vectors must be a non-empty (N, d) array, got {vectors.shape}")
    rows, dim = vectors.shape
    if len(titles) != rows:
        raise FixtureInputError(f"{len(titles)} titles for {rows} vector rows")
    unknown = set(options.types) - set(INDEX_NAMES)
    if unknown or not options.types:
        raise FixtureInputError(
            f"types must be among {', '.join(INDEX_NAMES)}, got {options.types}"
        )
    if options.seconds_per_item <= 0:
        raise FixtureInputError("seconds per item must be positive")
    count = rows if options.count is None else options.count
    if count < 1:
        raise FixtureInputError("count must be at least 1")
    pool_rows = np.random.default_rng(options.seed).choice(rows, min(rows, 256), replace=False)
    g = Granularities(
        dim,
        options.seed,
        anchor_pool=np.asarray(vectors[np.sort(pool_rows)], np.float64),
        events=options.events,
        entities=options.entities,
        storylines=options.storylines,
    )
    out.mkdir(parents=True, exist_ok=True)
    writers = {name: _IndexWriter(name, dim) for name in options.types}
    model = {"model_name": options.model} if options.model else {}
    for j in range(count):
        row = j % rows
        doc_id = f"doc_{j:06d}"
        vec = np.asarray(vectors[row], np.float32)
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or norm == 0.0:
            raise FixtureInputError(f"vector row {row} is zero or not finite")
        vec = vec / norm
        t = options.start_time + round(j * options.seconds_per_item)
        title = titles[row]
        fam = g.derive(doc_id, vec, t, title)
        if "documents" in writers:
            origin = item_ids[row] if item_ids is not None else str(row)
            writers["documents"].add(
                f"doc_emb_{doc_id}",
                doc_id,
                vec,
                {**_document_meta(title, t, fam, options, origin), **model},
            )
        for name, derived in (
            ("events", fam.events),
            ("entities", fam.entities),
            ("storylines", fam.storylines),
        ):
            if name in writers:
                for d in derived:
                    writers[name].add(d.vector_id, d.source_id, d.vector, {**d.metadata, **model})
    return {name: w.write(out) for name, w in writers.items()}


def _document_meta(
    title: str, t: float, fam: DocumentFamily, options: FixtureOptions, origin: str
) -> dict[str, Any]:
    words = title.split()
    return {
        "title": title,
        "publication_date": iso(t),
        "word_count": len(words),
        "entity_count": len(fam.entities),
        "event_count": len(fam.events),
        "source_url": f"{options.source_url}{origin}",
        "categories": fam.categories,
        "tags": words[:2],
    }


def load_inputs(
    vectors: Path, items: Path, title_field: str, id_field: str | None
) -> tuple[npt.NDArray[Any], list[str], list[str] | None]:
    """The vectors (memory-mapped) and the titles (and optional ids) of the items JSONL."""
    try:
        x = np.load(vectors, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FixtureInputError(
            f"vectors file {vectors} is not a readable .npy array: {exc}"
        ) from exc
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise FixtureInputError(
            f"vectors file {vectors} must hold float rows (N, d), got {x.shape} {x.dtype}"
        )
    titles: list[str] = []
    ids: list[str] | None = [] if id_field else None
    try:
        with items.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FixtureInputError(
                        f"items file {items} line {lineno} is not JSON: {exc.msg}"
                    ) from exc
                if not isinstance(obj, dict) or not isinstance(obj.get(title_field), str | int):
                    raise FixtureInputError(
                        f"items file {items} line {lineno} has no {title_field!r} text"
                    )
                titles.append(str(obj[title_field]))
                if ids is not None and id_field is not None:
                    if id_field not in obj:
                        raise FixtureInputError(
                            f"items file {items} line {lineno} has no {id_field!r}"
                        )
                    ids.append(str(obj[id_field]))
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureInputError(f"items file {items} is unreadable: {exc}") from exc
    return x, titles, ids


def parse_range(text: str) -> tuple[int, int]:
    """'3' or '2-4' per document."""
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError as exc:
        raise FixtureInputError(f"{text!r} is not a count or a range like 2-4") from exc
    if a < 0 or b < a:
        raise FixtureInputError(f"{text!r} is not a range lo-hi with 0 <= lo <= hi")
    return a, b
