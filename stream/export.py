"""`clusterer export`: one UTC day of clusters of one embedding type as Stage 5 JSONL (seed 003
§3.5: one `ClusterResult` per line, `clustered_<type>s_<date>.jsonl`), read from PostgreSQL.

A cluster belongs to a day when its event-time span [first member, last member] intersects
the UTC day [00:00, 24:00): the clusters live on that day, whether still live now or retired
or merged since (those come with their last summary and no members). Candidates that never
became active have no summary and are left out. Rows stream through a server-side cursor in
one read-only snapshot, one cluster with its members at a time, so a large day never sits in
memory whole; the file appears complete or not at all (written aside, then renamed).
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

from schemas.inputs import EMBEDDING_TYPES
from state.results import assemble

_QUERY = """
SELECT c.id, c.cluster_type, c.embedding_type, c.status, c.size, c.weight, c.label,
       c.medoid_item_id, c.summary::text AS summary, c.first_event_time, c.last_event_time,
       c.centroid, m.ids, m.docs
FROM clusters c
LEFT JOIN LATERAL (
    SELECT array_agg(i.item_id ORDER BY i.event_time, i.item_id) AS ids,
           array_agg(i.document_id ORDER BY i.event_time, i.item_id) AS docs
    FROM cluster_items i
    WHERE i.cluster_id = c.id AND i.cluster_type = c.cluster_type
) m ON true
WHERE c.embedding_type = $1 AND c.summary IS NOT NULL
  AND c.first_event_time < $3 AND c.last_event_time >= $2
ORDER BY c.first_event_time, c.id
"""


class ExportError(ValueError):
    """A bad argument: the command prints it on one line and exits with 2."""


def parse_day(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ExportError(f"--date {raw!r} is not a date (YYYY-MM-DD)") from None


def check_type(raw: str) -> str:
    if raw not in EMBEDDING_TYPES:
        raise ExportError(f"--embedding-type {raw!r} is not one of {', '.join(EMBEDDING_TYPES)}")
    return raw


PLURALS = {
    "document": "documents",
    "event": "events",
    "entity": "entities",
    "storyline": "storylines",
}


def default_name(embedding_type: str, day: date) -> Path:
    """The seed's file name (§3.5: `clustered_events_2025-12-15.jsonl`), plural of the type."""
    return Path(f"clustered_{PLURALS[embedding_type]}_{day.isoformat()}.jsonl")


def day_bounds(day: date) -> tuple[float, float]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


async def export(dsn: str, embedding_type: str, day: date, out: Path, prefetch: int = 200) -> int:
    """Write the day's clusters to `out`; returns how many."""
    directory = out.resolve().parent
    if not directory.is_dir():
        raise ExportError(f"--out {out}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise ExportError(f"--out {out}: directory {directory} is not writable")
    start, end = day_bounds(day)
    tmp = directory / f".{out.name}.{os.getpid()}.part"
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    cursor = conn.cursor(_QUERY, embedding_type, start, end, prefetch=prefetch)
                    async for row in cursor:
                        members = list(zip(row["ids"] or [], row["docs"] or [], strict=True))
                        result = assemble(row, members)
                        if result is None:
                            continue
                        fh.write(result.model_dump_json())
                        fh.write("\n")
                        n += 1
            finally:
                await conn.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n
