"""The read side's SQL over the live stream's tables (read only) and its keyset cursors.
Every value travels as a bind parameter; only fixed fragments chosen from whitelists are
spliced into the text."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from api.errors import invalid
from api.models import Filters, Order, SortKey
from state.retention import table_stats

_SORT_EXPR: dict[str, str] = {
    "last_event_time": "COALESCE(c.last_event_time, '-infinity'::float8)",
    "first_event_time": "COALESCE(c.first_event_time, '-infinity'::float8)",
    "size": "c.size::float8",
    "weight": "c.weight",
}
CLUSTER_COLS = (
    "c.id, c.cluster_type, c.embedding_type, c.status, c.size, c.weight, c.label,"
    " c.medoid_item_id, c.summary::text AS summary, c.first_event_time, c.last_event_time,"
    " c.updated_at"
)


# ---------------------------------------------------------------------- cursors
def encode_cursor(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()


def decode_cursor(raw: str, field: str = "query.cursor") -> dict[str, Any]:
    try:
        obj = json.loads(base64.urlsafe_b64decode(raw.encode("ascii") + b"=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise invalid(field, "not a cursor this API issued") from exc
    if not isinstance(obj, dict) or "\\u0000" in json.dumps(obj):
        raise invalid(field, "not a cursor this API issued")
    return obj


# ---------------------------------------------------------------------- filters
class Where:
    """WHERE clauses with numbered parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, clause: str) -> None:
        self.parts.append(clause)

    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


def cluster_filters(f: Filters, w: Where) -> None:
    w.add(f"c.status = ANY({w.arg(list(f.status))}::text[])")
    if f.embedding_type is not None:
        w.add(
            "COALESCE(c.embedding_type, split_part(c.cluster_type, '/', 1)) ="
            f" {w.arg(f.embedding_type)}"
        )
    if f.scope is not None:
        w.add(f"c.cluster_type = {w.arg(f.scope)}")
    if f.domain is not None:
        w.add(f"c.summary->>'domain' = {w.arg(f.domain)}")
    if f.event_type is not None:
        w.add(f"c.summary->>'event_type' = {w.arg(f.event_type)}")
    if f.since is not None:
        w.add(f"c.last_event_time >= {w.arg(f.since.timestamp())}")
    if f.until is not None:
        w.add(f"c.first_event_time <= {w.arg(f.until.timestamp())}")
    if f.min_size > 0:
        w.add(f"c.size >= {w.arg(f.min_size)}")


async def list_clusters(
    pool: asyncpg.Pool,
    f: Filters,
    sort: SortKey,
    order: Order,
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None]:
    w = Where()
    cluster_filters(f, w)
    expr = _SORT_EXPR[sort]
    cmp = "<" if order == "desc" else ">"
    if cursor is not None:
        cur = decode_cursor(cursor)
        value, last_id = cur.get("v"), cur.get("id")
        if cur.get("s") != sort or cur.get("o") != order:
            raise invalid("query.cursor", "was issued for another sort or order")
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not isinstance(last_id, str)
        ):
            raise invalid("query.cursor", "not a cursor this API issued")
        w.add(f"({expr}, c.id) {cmp} ({w.arg(float(value))}::float8, {w.arg(last_id)})")
    direction = "DESC" if order == "desc" else "ASC"
    sql = (
        f"SELECT {CLUSTER_COLS}, {expr} AS sort_value FROM clusters c WHERE {w.sql()}"
        f" ORDER BY {expr} {direction}, c.id {direction} LIMIT {w.arg(limit + 1)}"
    )
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *w.args)
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        nxt = encode_cursor({"s": sort, "o": order, "v": last["sort_value"], "id": last["id"]})
    return rows, nxt


async def cluster_row(pool: asyncpg.Pool, cluster_id: str) -> asyncpg.Record | None:
    async with pool.acquire() as conn:
        row: asyncpg.Record | None = await conn.fetchrow(
            f"SELECT {CLUSTER_COLS}, c.centroid FROM clusters c WHERE c.id = $1", cluster_id
        )
    return row


async def cluster_rows(pool: asyncpg.Pool, ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    if not ids:
        return {}
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {CLUSTER_COLS} FROM clusters c WHERE c.id = ANY($1::text[])", list(ids)
        )
    return {r["id"]: r for r in rows}


async def members(
    pool: asyncpg.Pool, cluster_id: str, limit: int, after: int | None = None
) -> list[asyncpg.Record]:
    """Members in the order they were first stored (the row id), `limit` of them after the
    row id `after`."""
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT id, item_id, item_type, document_id, similarity, event_time"
            " FROM cluster_items WHERE cluster_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            cluster_id,
            after if after is not None else -1,
            limit,
        )
    return rows


async def history(
    pool: asyncpg.Pool, cluster_id: str, limit: int, after: tuple[int, str] | None
) -> list[asyncpg.Record]:
    """The cluster's change events and those naming it in related_ids (a merge into another
    cluster, a split off it), in the scope's event order."""
    seq, eid = after if after is not None else (-1, "")
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT event_id, cluster_id, kind, related_ids, event_time, sequence,"
            " payload::text AS payload FROM cluster_events"
            " WHERE (cluster_id = $1 OR related_ids @> ARRAY[$1]::text[])"
            " AND (sequence, event_id) > ($2, $3)"
            " ORDER BY sequence, event_id LIMIT $4",
            cluster_id,
            seq,
            eid,
            limit,
        )
    return rows


async def item_memberships(pool: asyncpg.Pool, item_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            f"SELECT ci.cluster_type AS member_scope, ci.cluster_id AS member_cluster,"
            f" {CLUSTER_COLS} FROM cluster_items ci LEFT JOIN clusters c"
            " ON c.id = ci.cluster_id WHERE ci.item_id = $1 ORDER BY ci.cluster_type",
            item_id,
        )
    return rows


async def centroids(pool: asyncpg.Pool, f: Filters) -> list[asyncpg.Record]:
    w = Where()
    cluster_filters(f, w)
    w.add("c.centroid IS NOT NULL")
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            f"SELECT {CLUSTER_COLS}, c.centroid FROM clusters c WHERE {w.sql()}", *w.args
        )
    return rows


async def search_text(
    pool: asyncpg.Pool, f: Filters, words: list[str], limit: int
) -> list[asyncpg.Record]:
    w = Where()
    cluster_filters(f, w)
    for word in words:
        esc = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        w.add(f"c.label ILIKE {w.arg('%' + esc + '%')}")
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            f"SELECT {CLUSTER_COLS} FROM clusters c WHERE {w.sql()}"
            f" ORDER BY c.size DESC, c.id LIMIT {w.arg(limit)}",
            *w.args,
        )
    return rows


async def statistics(pool: asyncpg.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        by_status = await conn.fetch(
            "SELECT cluster_type, COALESCE(max(embedding_type),"
            " split_part(cluster_type, '/', 1)) AS etype, status, count(*) AS n,"
            " max(last_event_time) AS last FROM clusters GROUP BY cluster_type, status"
        )
        items = await conn.fetch(
            "SELECT cluster_type, count(*) AS n FROM cluster_items GROUP BY cluster_type"
        )
        runs = await conn.fetch(
            "SELECT cluster_type, count(*) FILTER (WHERE skipped IS NULL) AS done,"
            " count(*) FILTER (WHERE skipped IS NOT NULL) AS skipped"
            " FROM reconsolidation_runs GROUP BY cluster_type"
        )
        jobs = await conn.fetch("SELECT status, count(*) AS n FROM batch_jobs GROUP BY status")
        storage = await table_stats(conn)
    return {"by_status": by_status, "items": items, "runs": runs, "jobs": jobs,
            "storage": storage}  # fmt: skip


async def recent_events(
    pool: asyncpg.Pool,
    limit: int,
    after: tuple[float, str] | None,
    scope: str | None,
    kinds: list[str] | None = None,
) -> list[asyncpg.Record]:
    """Change events across clusters in the order they were stored (newest last), those
    after the cursor (stored time, event id); without a cursor the newest `limit`."""
    w = Where()
    if scope is not None:
        w.add(f"cluster_type = {w.arg(scope)}")
    if kinds:
        w.add(f"kind = ANY({w.arg(kinds)}::text[])")
    cols = (
        "event_id, cluster_id, cluster_type, kind, related_ids, event_time, sequence,"
        " payload::text AS payload, extract(epoch FROM created_at)::float8 AS stored"
    )
    async with pool.acquire() as conn:
        if after is None:
            rows = await conn.fetch(
                f"SELECT * FROM (SELECT {cols} FROM cluster_events WHERE {w.sql()}"
                f" ORDER BY stored DESC, event_id DESC LIMIT {w.arg(limit)}) e"
                " ORDER BY stored, event_id",
                *w.args,
            )
        else:
            w.add(
                f"(extract(epoch FROM created_at)::float8, event_id) >"
                f" ({w.arg(after[0])}::float8, {w.arg(after[1])})"
            )
            rows = await conn.fetch(
                f"SELECT {cols} FROM cluster_events WHERE {w.sql()}"
                f" ORDER BY stored, event_id LIMIT {w.arg(limit)}",
                *w.args,
            )
    return list(rows)
