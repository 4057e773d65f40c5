"""`clusterer backfill`: Stage 3's index directory into the same engine as the live stream.

`publish` sends every vector to the input topic as a per-vector `VectorEvent`, keyed by its
item id (Stage 3's `vector_id`), in event-time order: the router and the worker treat it as
live input, and a re-sent item replaces itself (nothing counts twice when a backfill runs
again). `offline` runs each scope through `stream.replay.run` (exactly what
`clusterer replay` runs) and writes `ClusterResult` JSONL whose member ids are Stage 3's
`source_id`s.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any, cast

import orjson
from confluent_kafka import KafkaError, Message, Producer

from processors import EngineConfig, ScopeKey
from schemas.outputs import ClusterResult
from stream.replay import ReplayInputs
from stream.settings import Settings
from stream.stage3 import Stage3Directory, Stage3Index


class Progress:
    """A one-line bar on stderr, drawn only on a terminal."""

    def __init__(self, total: int, enabled: bool, what: str = "") -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.what = what
        self.shown = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        step = done * 40 // self.total
        if step != self.shown or done == self.total:
            self.shown = step
            sys.stderr.write(f"\r{self.what}[{'#' * step}{'.' * (40 - step)}] {done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# --------------------------------------------------------------------------- publish
def publish(
    directory: Stage3Directory, settings: Settings, topic: str | None = None, progress: bool = False
) -> int:
    """Every vector to the input topic; returns the count delivered."""
    p = Producer(settings.producer_config(**{"linger.ms": 20}))
    target = topic or settings.input_topics[0]
    failed: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(str(err))

    bar = Progress(len(directory), progress, "publish ")
    n = 0
    for item in directory.items():
        value = orjson.dumps(item.vector_event())
        key = item.item_id.encode()
        while True:
            try:
                p.produce(target, value, key=key, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        n += 1
        if n % 1024 == 0:
            bar.update(n)
    bar.update(n)
    bar.close()
    if p.flush(120) or failed:
        raise RuntimeError(
            f"{len(failed) or 'some'} backfill events not delivered"
            + (f": {failed[0]}" if failed else "")
        )
    return n


# --------------------------------------------------------------------------- offline
@dataclass
class ScopeOutcome:
    """One scope's offline pass: items in the order they ran and their final clusters."""

    scope: ScopeKey
    item_ids: list[str]
    source_ids: list[str]
    final_cluster_ids: list[str | None]
    clusters: list[ClusterResult]
    stats: dict[str, Any] = field(default_factory=dict)


def _engine_pass(
    inputs: ReplayInputs,
    config: EngineConfig,
    scope: ScopeKey,
    batch_size: int,
    assignments_out: IO[str] | None,
    progress: bool,
) -> tuple[list[str | None], list[ClusterResult], dict[str, Any]]:
    """The one place the backfill meets the engine: `clusterer replay`'s run."""
    from stream.replay import run

    out = run(inputs, config, scope, batch_size, assignments_out, progress)
    return list(out.cluster_ids), out.engine.results(), out.engine.stats()


class _SourceIdAssignments:
    """Assignment lines as the engine writes them, with the Stage 3 `source_id` (and the
    document id) added."""

    def __init__(
        self, fh: IO[str], source_of: dict[str, str], doc_of: dict[str, str | None]
    ) -> None:
        self.fh = fh
        self.source_of = source_of
        self.doc_of = doc_of
        self.buf = ""

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line:
                a = orjson.loads(line)
                item = a.get("item_id")
                a["source_id"] = self.source_of.get(item, item)
                if a.get("document_id") is None:
                    a["document_id"] = self.doc_of.get(item)
                self.fh.write(orjson.dumps(a).decode() + "\n")
        return len(text)


def _to_source_ids(
    c: ClusterResult, source_of: dict[str, str], doc_of: dict[str, str | None]
) -> ClusterResult:
    """Member ids (and representative ids) back to Stage 3 source ids; document ids from
    the members when the engine had none."""
    fields = type(c).model_fields
    update: dict[str, Any] = {"member_ids": [source_of.get(i, i) for i in c.member_ids]}
    if "representative_ids" in fields:
        update["representative_ids"] = [source_of.get(i, i) for i in c.representative_ids]
    medoid = getattr(c, "medoid_id", None)
    if "medoid_id" in fields and medoid is not None:
        update["medoid_id"] = source_of.get(medoid, medoid)
    if "document_ids" in fields and not c.document_ids:
        docs = (doc_of.get(i) for i in c.member_ids)
        update["document_ids"] = list(dict.fromkeys(d for d in docs if d))
    return c.model_copy(update=update)


def _scope_inputs(ix: Stage3Index, positions: Iterable[int]) -> tuple[ReplayInputs, list[str]]:
    import numpy as np

    pos = np.fromiter(positions, np.int64)
    metas: list[dict[str, Any] | None] = [
        {**ix.metadata[p], "source_id": ix.source_ids[p]} for p in pos.tolist()
    ]
    inputs = ReplayInputs(
        ix.matrix(pos), ix.times[pos], [ix.vector_ids[p] for p in pos.tolist()], metas
    )
    return inputs, [ix.source_ids[p] for p in pos.tolist()]


def offline(
    directory: Stage3Directory,
    config: EngineConfig,
    clusters_out: IO[str] | None,
    assignments_out: IO[str] | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> list[ScopeOutcome]:
    """One engine pass per (embedding type, model), each in event-time order."""
    outcomes: list[ScopeOutcome] = []
    for (kind, model), ix, positions in directory.scopes():
        scope = ScopeKey(kind, model)
        inputs, sources = _scope_inputs(ix, positions)
        source_of = dict(zip(inputs.ids, sources, strict=True))
        doc_of = {ix.vector_ids[p]: ix.document_ids[p] for p in positions.tolist()}
        sink = (
            cast(IO[str], _SourceIdAssignments(assignments_out, source_of, doc_of))
            if assignments_out is not None
            else None
        )
        if progress:
            sys.stderr.write(f"{scope.name}: {len(inputs.ids)} vectors\n")
        finals, clusters, stats = _engine_pass(inputs, config, scope, batch_size, sink, progress)
        results = [_to_source_ids(c, source_of, doc_of) for c in clusters]
        if clusters_out is not None:
            for c in results:
                clusters_out.write(c.model_dump_json() + "\n")
        outcomes.append(ScopeOutcome(scope, inputs.ids, sources, finals, results, stats))
        del inputs
    return outcomes


def summary(
    directory: Stage3Directory, outcomes: list[ScopeOutcome] | None, published: int | None
) -> str:
    out: dict[str, Any] = {
        "directory": str(directory.path),
        "vectors": directory.counts(),
        "untimed": directory.untimed,
    }
    if published is not None:
        out["published"] = published
    if outcomes is not None:
        out["scopes"] = {
            o.scope.name: {
                "items": len(o.item_ids),
                "clusters_out": len(o.clusters),
                "in_a_cluster": sum(c is not None for c in o.final_cluster_ids),
            }
            for o in outcomes
        }
    return json.dumps(out)
