"""Batch clustering jobs: the engine run offline (as `clusterer replay` runs it) over an
uploaded JSONL of vector events, a directory of them under the data root, or a Stage 3
index directory under the data root (as `clusterer backfill --offline` reads it), in a background
thread of the API. State, progress and an engine checkpoint live in PostgreSQL (tables
`batch_job*`, migration 004), so a job survives an API restart: a running job holds a lease
(`owner`, `heartbeat_at`); when its API dies the lease lapses and the next API resumes it
from its last checkpoint. Results never touch the live stream's tables."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from processors import Batch, CheckpointError, Engine, EngineConfig, ScopeKey
from schemas.inputs import VectorEvent
from schemas.outputs import ClusterResult
from schemas.validation import InputError, decode_vector

log = logging.getLogger(__name__)
CHUNK = 1024  # items per engine call, and per progress update
JOB_COLS = (
    "id, status, source_kind, source_path, name, items_total, items_done, items_rejected,"
    " resumed_from,"
    " clusters, error, cancel_requested, created_at, started_at, finished_at"
)


class BadInput(ValueError):
    """A line of a job's input that is not a vector event: `where` names it for the client."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def parse_jsonl(data: bytes, origin: str) -> list[VectorEvent]:
    """Every non-blank line a VectorEvent; the first bad one raises BadInput naming it."""
    out: list[VectorEvent] = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(VectorEvent.model_validate_json(line))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ())) or "line"
            where = f"{origin}[{n}].{loc}" if loc != "line" else f"{origin}[{n}]"
            raise BadInput(where, str(err.get("msg", "invalid"))) from exc
    return out


def directory_files(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("*.jsonl") if p.is_file())


def read_directory(path: Path) -> list[VectorEvent]:
    events: list[VectorEvent] = []
    for f in directory_files(path):
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise BadInput(f.name, f"unreadable: {exc.strerror or exc}") from exc
        events.extend(parse_jsonl(data, f.name))
    return events


def in_time_order(events: list[VectorEvent]) -> list[VectorEvent]:
    """Event-time order (stable): what the engine's temporal model expects of a stream."""
    return sorted(events, key=lambda e: e.event_time)


def is_stage3(path: Path) -> bool:
    """A Stage 3 index directory (seed 003 §2): any of the four index files is there."""
    from stream.stage3 import INDEX_NAMES

    return any((path / f"{name}.index").is_file() for name in INDEX_NAMES)


@dataclass
class Source:
    """A job's input as the runner consumes it: `chunks(start)` yields the items from
    position `start` on, CHUNK at a time, in the order they are clustered; `run(engine,
    chunk)` feeds one chunk and returns how many items the engine refused; `finish` turns
    the engine's results into the job's output lines."""

    total: int
    chunks: Callable[[int], Iterator[Any]]
    run: Callable[[Engine, Any], int]
    finish: Callable[[list[ClusterResult]], list[ClusterResult]] = lambda rs: rs


Row = tuple[npt.NDArray[np.float32], str, float, str | None, dict[str, Any], ScopeKey]
"""vector, item id, event time, document id, metadata, scope: one item for Engine.learn"""


def learn(engine: Engine, rows: list[Row], document_ids: bool = True) -> None:
    """The rows in order, one Batch per run of equal dimension (one matrix per call)."""
    for _, group in itertools.groupby(rows, key=lambda r: r[0].shape[0]):
        g = list(group)
        engine.learn(
            Batch(
                np.vstack([r[0] for r in g]),
                [r[1] for r in g],
                np.asarray([r[2] for r in g], dtype=np.float64),
                [r[3] for r in g] if document_ids else None,
                [r[4] for r in g],
                [r[5] for r in g],
            )
        )


def events_source(events: list[VectorEvent]) -> Source:
    ordered = in_time_order(events)

    def chunks(start: int) -> Iterator[list[VectorEvent]]:
        for i in range(start, len(ordered), CHUNK):
            yield ordered[i : i + CHUNK]

    def run(engine: Engine, chunk: list[VectorEvent]) -> int:
        """Vectors the engine cannot take (zero, non-finite, badly encoded, another
        dimension than their scope's) are counted as rejected, as the worker dead-letters
        them."""
        rows: list[Row] = []
        dims: dict[ScopeKey, int] = {}
        for ev in chunk:
            key = engine.scope_key(ev.embedding_type, ev.embedding_model, ev.metadata)
            try:
                vec = decode_vector(ev.vector)
            except InputError:
                continue
            if vec.shape[0] != dims.setdefault(key, engine.dimension(key) or vec.shape[0]):
                continue
            rows.append((vec, ev.item_id, ev.event_time, ev.document_id, ev.metadata, key))
        learn(engine, rows)
        return len(chunk) - len(rows)

    return Source(len(ordered), chunks, run)


def stage3_source(path: Path, model: str | None = None) -> Source:
    """A Stage 3 directory read as `clusterer backfill --offline` reads it (stream.stage3:
    every index, event-time order, vectors memory-mapped and read in chunks), results with
    the Stage 3 `source_id`s as member ids, as the backfill writes them."""
    from stream.backfill import _to_source_ids
    from stream.stage3 import open_directory

    directory = open_directory(path, model)
    source_of: dict[str, str] = {}
    doc_of: dict[str, str | None] = {}
    for ix in directory.indices:
        source_of.update(zip(ix.vector_ids, ix.source_ids, strict=True))
        doc_of.update(zip(ix.vector_ids, ix.document_ids, strict=True))

    def chunks(start: int) -> Iterator[list[Any]]:
        it = itertools.islice(directory.items(), start, None)
        while batch := list(itertools.islice(it, CHUNK)):
            yield batch

    def run(engine: Engine, chunk: list[Any]) -> int:
        # as the backfill feeds the engine: document ids are put back from the metadata
        # when the results are renamed to source ids (finish)
        rows: list[Row] = [
            (
                i.vector,
                i.item_id,
                i.event_time,
                i.document_id,
                i.metadata,
                engine.scope_key(i.embedding_type, i.embedding_model, i.metadata),
            )
            for i in chunk
        ]
        learn(engine, rows, document_ids=False)
        return 0

    def finish(results: list[ClusterResult]) -> list[ClusterResult]:
        return [_to_source_ids(r, source_of, doc_of) for r in results]

    return Source(len(directory), chunks, run, finish)


# ---------------------------------------------------------------------- database side
async def create_job(
    conn: asyncpg.Connection,
    kind: str,
    name: str | None,
    items: int,
    data: bytes | None = None,
    path: str | None = None,
    model: str | None = None,
) -> asyncpg.Record:
    job_id = uuid.uuid4().hex
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO batch_jobs (id, status, source_kind, source_path, name, items_total,"
            f" model) VALUES ($1, 'queued', $2, $3, $4, $5, $6) RETURNING {JOB_COLS}",
            job_id,
            kind,
            path,
            name,
            items,
            model,
        )
        if data is not None:
            await conn.execute(
                "INSERT INTO batch_job_inputs (job_id, data) VALUES ($1, $2)", job_id, data
            )
    assert row is not None
    return row


async def get_job(conn: Any, job_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {JOB_COLS} FROM batch_jobs WHERE id = $1", job_id
    )
    return row


async def cancel_job(conn: Any, job_id: str) -> asyncpg.Record | None:
    """Queued: cancelled at once. Running: flagged; its runner stops at the next chunk."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE batch_jobs SET cancel_requested = (status IN ('queued', 'running')),"
        " status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,"
        " finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END"
        f" WHERE id = $1 RETURNING {JOB_COLS}",
        job_id,
    )
    return row


class JobRunner:
    """One background thread per API process running one job at a time."""

    def __init__(
        self,
        dsn: str,
        config: EngineConfig,
        data_root: Path | None,
        lease_seconds: float,
        checkpoint_items: int,
    ) -> None:
        self.dsn = dsn
        self.config = config
        self.data_root = data_root
        self.lease = lease_seconds
        self.checkpoint_items = checkpoint_items
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="batch-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._loop())
        except Exception:
            log.exception("batch job runner stopped")

    async def _loop(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.dsn)
                job = await self._claim(conn)
                if job is not None:
                    await self._run(conn, job)
                    continue
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("batch jobs: database call failed (%r); retrying", exc)
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.to_thread(self._wake.wait, max(0.2, self.lease / 3))
            self._wake.clear()
        if conn is not None:
            await conn.close()

    async def _claim(self, conn: asyncpg.Connection) -> asyncpg.Record | None:
        """The oldest queued job, or a running one whose runner stopped renewing its lease
        (its API died)."""
        row: asyncpg.Record | None = await conn.fetchrow(
            "UPDATE batch_jobs SET status = 'running', owner = $1, heartbeat_at = now(),"
            " started_at = COALESCE(started_at, now()) WHERE id = ("
            " SELECT id FROM batch_jobs WHERE status = 'queued' OR (status = 'running' AND"
            " heartbeat_at < now() - make_interval(secs => $2))"
            " ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)"
            " RETURNING id, source_kind, source_path, model, checkpoint, checkpoint_done,"
            " checkpoint_rejected, cancel_requested",
            self.owner,
            self.lease,
        )
        return row

    async def _finish(
        self, conn: asyncpg.Connection, job_id: str, status: str, error: str | None = None
    ) -> None:
        await conn.execute(
            "UPDATE batch_jobs SET status = $3, error = $4, finished_at = now(),"
            " checkpoint = NULL WHERE id = $1 AND owner = $2",
            job_id,
            self.owner,
            status,
            error,
        )
        await conn.execute("DELETE FROM batch_job_inputs WHERE job_id = $1", job_id)

    async def _load(self, conn: asyncpg.Connection, job: asyncpg.Record) -> Source:
        if job["source_kind"] == "upload":
            data = await conn.fetchval(
                "SELECT data FROM batch_job_inputs WHERE job_id = $1", job["id"]
            )
            if data is None:
                raise BadInput("upload", "the uploaded input is gone")
            return events_source(parse_jsonl(bytes(data), "line"))
        if self.data_root is None:
            raise BadInput("path", "CLUSTERER_API_DATA_ROOT is not configured any more")
        from api.security import confine

        path = confine(self.data_root, str(job["source_path"]))
        if is_stage3(path):
            return await asyncio.to_thread(stage3_source, path, job["model"])
        return events_source(await asyncio.to_thread(read_directory, path))

    async def _run(self, conn: asyncpg.Connection, job: asyncpg.Record) -> None:
        job_id = job["id"]
        if job["cancel_requested"]:
            await self._finish(conn, job_id, "cancelled")
            return
        try:
            source = await self._load(conn, job)
        except Exception as exc:  # a bad input fails this job, never the runner
            await self._finish(conn, job_id, "failed", _message(exc))
            return
        engine, start, rejected = Engine(self.config), 0, 0
        if job["checkpoint"] is not None:  # resume: the engine as it was after `start` items
            try:
                engine = Engine.restore(bytes(job["checkpoint"]))
                start, rejected = int(job["checkpoint_done"]), int(job["checkpoint_rejected"])
            except CheckpointError as exc:  # e.g. written by another version: start over
                log.warning("batch job %s: checkpoint unusable (%s), starting over", job_id, exc)
                engine = Engine(self.config)
        total = source.total
        log.info("batch job %s: %d items, starting at %d", job_id, total, start)
        await conn.execute(
            "UPDATE batch_jobs SET items_total = $2, items_done = $3, items_rejected = $4,"
            " resumed_from = $3 WHERE id = $1",
            job_id,
            total,
            start,
            rejected,
        )
        since_checkpoint = 0
        try:
            done = start
            chunks = source.chunks(start)
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                rejected += await asyncio.to_thread(source.run, engine, chunk)
                since_checkpoint += len(chunk)
                done += len(chunk)
                ckpt = None
                if since_checkpoint >= self.checkpoint_items and done < total:
                    ckpt = await asyncio.to_thread(engine.snapshot)
                    since_checkpoint = 0
                state = await conn.fetchrow(
                    "UPDATE batch_jobs SET items_done = $3, items_rejected = $4,"
                    " heartbeat_at = now(), checkpoint = COALESCE($5, checkpoint),"
                    " checkpoint_done = CASE WHEN $5::bytea IS NULL THEN checkpoint_done"
                    " ELSE $3 END, checkpoint_rejected = CASE WHEN $5::bytea IS NULL THEN"
                    " checkpoint_rejected ELSE $4 END"
                    " WHERE id = $1 AND owner = $2 RETURNING cancel_requested",
                    job_id,
                    self.owner,
                    done,
                    rejected,
                    ckpt,
                )
                if state is None:  # another API took the job over (this one stalled)
                    log.warning("batch job %s: lease lost, leaving it", job_id)
                    return
                if state["cancel_requested"]:
                    await self._finish(conn, job_id, "cancelled")
                    return
                if self._stop.is_set():  # shutdown: hand the job back; it resumes from its
                    await conn.execute(  # checkpoint in the next API to claim it
                        "UPDATE batch_jobs SET status = 'queued', owner = NULL"
                        " WHERE id = $1 AND owner = $2",
                        job_id,
                        self.owner,
                    )
                    return
            engine.flush()
            results = source.finish(engine.results())
        except Exception as exc:
            log.exception("batch job %s failed", job_id)
            await self._finish(conn, job_id, "failed", _message(exc))
            return
        async with conn.transaction():
            await conn.execute("DELETE FROM batch_job_results WHERE job_id = $1", job_id)
            await conn.copy_records_to_table(
                "batch_job_results",
                records=[
                    (job_id, n, r.cluster_id, r.model_dump_json()) for n, r in enumerate(results)
                ],
                columns=["job_id", "seq", "cluster_id", "result"],
            )
            await conn.execute(
                "UPDATE batch_jobs SET clusters = $3, status = 'succeeded', finished_at = now(),"
                " checkpoint = NULL WHERE id = $1 AND owner = $2",
                job_id,
                self.owner,
                len(results),
            )
            await conn.execute("DELETE FROM batch_job_inputs WHERE job_id = $1", job_id)
        log.info("batch job %s: %d clusters", job_id, len(results))


def _message(exc: Exception) -> str:
    if isinstance(exc, BadInput):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]
