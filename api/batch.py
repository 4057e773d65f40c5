"""Batch job endpoints: submit (admin), status, cancel (admin) and results as JSONL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from api import jobs
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody, FieldError, invalid
from api.models import NO_NUL, DirectoryJob, Job
from api.security import admin, confine
from api.settings import ApiSettings

router = APIRouter(prefix="/api/v1/cluster", responses=ERROR_RESPONSES)  # type: ignore[arg-type]
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]{1,64}$")]
JSONL_TYPES = ("application/x-ndjson", "application/jsonl")
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "description": "one VectorEvent per line, at most"
                    " CLUSTERER_API_MAX_UPLOAD_BYTES",
                }
            },
            "application/json": {"schema": DirectoryJob.model_json_schema()},
        },
    }
}


def _job(row: Any) -> Job:
    total, done = int(row["items_total"]), int(row["items_done"])
    return Job(
        job_id=row["id"],
        status=row["status"],
        source_kind=row["source_kind"],
        source_path=row["source_path"],
        name=row["name"],
        items_total=total,
        items_done=done,
        items_rejected=row["items_rejected"],
        resumed_from=row["resumed_from"],
        progress=1.0
        if row["status"] == "succeeded"
        else (min(done / total, 1.0) if total else 0.0),
        clusters=row["clusters"],
        error=row["error"],
        cancel_requested=row["cancel_requested"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


@router.post(
    "/batch",
    response_model=Job,
    status_code=202,
    summary="Submit a batch clustering job: an uploaded JSONL of vector events"
    " (application/x-ndjson), or a directory under the data root (application/json): a"
    " Stage 3 index directory (seed 003 §2) or *.jsonl vector events",
    openapi_extra=_BODY,
    dependencies=[Depends(admin)],
    responses={
        409: {"model": ErrorBody, "description": "directory jobs are not configured"},
        415: {"model": ErrorBody, "description": "neither JSONL nor JSON"},
    },
)
async def submit(
    request: Request,
    name: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="a label for the job")
    ] = None,
) -> Job:
    s: ApiSettings = request.app.state.settings
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if ctype in JSONL_TYPES:
        try:
            events = jobs.parse_jsonl(body, "body.line")
        except jobs.BadInput as exc:
            raise ApiError(
                422, str(exc), [FieldError(field=exc.where, message=exc.message)]
            ) from exc
        if not events:
            raise invalid("body", "the upload holds no vector events")
        async with _pool(request).acquire() as conn:
            row = await jobs.create_job(conn, "upload", name, len(events), data=body)
    elif ctype == "application/json":
        try:
            spec = DirectoryJob.model_validate_json(body)
        except ValidationError as exc:
            fields = [
                FieldError(
                    field=".".join(["body", *(str(p) for p in e.get("loc", ()))]),
                    message=str(e.get("msg", "invalid")),
                )
                for e in exc.errors()
            ]
            raise ApiError(422, "invalid job", fields) from exc
        path = confine(s.data_root, spec.path)
        if not path.is_dir():
            raise invalid("body.path", "is not a directory under the data root")
        total = 0
        if jobs.is_stage3(path):
            from stream.stage3 import Stage3Error, open_directory

            try:  # every check of `clusterer backfill`, before the job is accepted
                total = len(await asyncio.to_thread(open_directory, path, spec.model))
            except Stage3Error as exc:
                raise invalid("body.path", str(exc)) from exc
        elif not jobs.directory_files(path):
            raise invalid("body.path", "holds neither a Stage 3 index nor *.jsonl files")
        async with _pool(request).acquire() as conn:
            row = await jobs.create_job(
                conn, "directory", spec.name or name, total, path=spec.path, model=spec.model
            )
    else:
        raise ApiError(
            415, "send application/x-ndjson (an upload) or application/json (a directory job)"
        )
    runner: jobs.JobRunner | None = request.app.state.runner
    if runner is not None:
        runner.wake()
    return _job(row)


@router.get("/status/{job_id}", response_model=Job, summary="A batch job's state and progress")
async def status(request: Request, job_id: JobId) -> Job:
    async with _pool(request).acquire() as conn:
        row = await jobs.get_job(conn, job_id)
    if row is None:
        raise ApiError(404, f"no job {job_id!r}")
    return _job(row)


@router.post(
    "/cancel/{job_id}",
    response_model=Job,
    summary="Cancel a queued or running job",
    dependencies=[Depends(admin)],
)
async def cancel(request: Request, job_id: JobId) -> Job:
    async with _pool(request).acquire() as conn:
        row = await jobs.cancel_job(conn, job_id)
    if row is None:
        raise ApiError(404, f"no job {job_id!r}")
    return _job(row)


@router.get(
    "/results/{job_id}",
    summary="The job's clusters as ClusterResult JSONL",
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "description": "one ClusterResult per line",
        },
        409: {"model": ErrorBody, "description": "the job has not succeeded"},
    },
)
async def results(request: Request, job_id: JobId) -> StreamingResponse:
    pool = _pool(request)
    async with pool.acquire() as conn:
        row = await jobs.get_job(conn, job_id)
    if row is None:
        raise ApiError(404, f"no job {job_id!r}")
    if row["status"] != "succeeded":
        raise ApiError(409, f"job {job_id} is {row['status']}; results exist once it succeeded")

    async def lines() -> AsyncIterator[bytes]:
        async with pool.acquire() as conn, conn.transaction():
            cur = conn.cursor(
                "SELECT result::text AS r FROM batch_job_results WHERE job_id = $1 ORDER BY seq",
                job_id,
            )
            async for r in cur:
                yield r["r"].encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
