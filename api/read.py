"""The read endpoints under /api/v1: clusters (list, detail, members, history, search),
item lookup and statistics. They read the live stream's tables and never write them."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from api import assemble, queries
from api.cache import ReadCache
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody, invalid
from api.models import (
    NO_NUL,
    ClusterPage,
    ConsumerLag,
    EventPage,
    Filters,
    HistoryEvent,
    HistoryPage,
    ItemClusters,
    MapPoint,
    Member,
    MemberPage,
    Order,
    PartitionLag,
    ScopeMap,
    ScopeStatistics,
    SearchHit,
    SearchRequest,
    SearchResult,
    SortKey,
    Statistics,
    Status,
    TableStorage,
)
from api.settings import ApiSettings
from schemas.inputs import EmbeddingType
from schemas.outputs import ChangeKind, ClusterResult
from stream.settings import Settings

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)  # type: ignore[arg-type]
ClusterId = Annotated[str, Path(min_length=1, max_length=512, pattern=NO_NUL)]


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _cache(request: Request) -> ReadCache:
    cache: ReadCache = request.app.state.cache
    return cache


def _settings(request: Request) -> ApiSettings:
    s: ApiSettings = request.app.state.settings
    return s


def _json(body: bytes, cached: bool) -> Response:
    return Response(
        body, media_type="application/json", headers={"X-Cache": "hit" if cached else "miss"}
    )


# ---------------------------------------------------------------------- clusters
@router.get("/clusters", response_model=ClusterPage, summary="List clusters (keyset paginated)")
async def list_clusters(
    request: Request,
    embedding_type: EmbeddingType | None = None,
    scope: Annotated[str | None, Query(min_length=1, max_length=1024, pattern=NO_NUL)] = None,
    status: Annotated[list[Status] | None, Query(description="repeatable; default active")] = None,
    domain: Annotated[str | None, Query(min_length=1, max_length=256, pattern=NO_NUL)] = None,
    event_type: Annotated[str | None, Query(min_length=1, max_length=256, pattern=NO_NUL)] = None,
    since: Annotated[datetime | None, Query(description="span ends at or after")] = None,
    until: Annotated[datetime | None, Query(description="span starts at or before")] = None,
    min_size: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    sort: SortKey = "last_event_time",
    order: Order = "desc",
    limit: Annotated[int, Query(ge=1, description="capped at CLUSTERER_API_LIST_LIMIT_MAX")] = 50,
    cursor: Annotated[str | None, Query(max_length=2048, pattern=NO_NUL)] = None,
) -> Response:
    s = _settings(request)
    limit = min(limit, s.list_limit_max)
    f = Filters(
        embedding_type=embedding_type,
        scope=scope,
        status=status or ["active"],
        domain=domain,
        event_type=event_type,
        since=since,
        until=until,
        min_size=min_size,
    )
    key = {"f": f.model_dump(mode="json"), "s": sort, "o": order, "l": limit, "c": cursor}
    cache = _cache(request)
    hit = await cache.get_answer("clusters", key)
    if hit is not None:
        return _json(hit, True)
    rows, nxt = await queries.list_clusters(_pool(request), f, sort, order, limit, cursor)
    body = orjson.dumps({"items": [assemble.cluster_summary(r) for r in rows], "next_cursor": nxt})
    await cache.put_answer("clusters", key, body)
    return _json(body, False)


@router.get(
    "/clusters/{cluster_id}",
    response_model=ClusterResult,
    summary="The full ClusterResult (the Stage 5 contract, as `clusterer export` writes it)",
    responses={409: {"model": ErrorBody, "description": "a candidate: no ClusterResult yet"}},
)
async def get_cluster(request: Request, cluster_id: ClusterId) -> ClusterResult:
    pool = _pool(request)
    row = await queries.cluster_row(pool, cluster_id)
    if row is None:
        raise ApiError(404, f"no cluster {cluster_id!r}")
    ms = await queries.members(pool, cluster_id, _settings(request).detail_members_max)
    result = assemble.cluster_result(row, ms)
    if result is None:
        raise ApiError(
            409,
            f"cluster {cluster_id!r} is a candidate: it has a ClusterResult once it becomes"
            " active (its members: /members)",
        )
    return result


@router.get(
    "/clusters/{cluster_id}/members", response_model=MemberPage, summary="Members, paginated"
)
async def get_members(
    request: Request,
    cluster_id: ClusterId,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=512, pattern=NO_NUL)] = None,
) -> MemberPage:
    pool = _pool(request)
    limit = min(limit, _settings(request).list_limit_max)
    after = None
    if cursor is not None:
        c = queries.decode_cursor(cursor)
        after = c.get("m")
        if not isinstance(after, int) or isinstance(after, bool):
            raise invalid("query.cursor", "not a cursor this API issued")
    if await queries.cluster_row(pool, cluster_id) is None:
        raise ApiError(404, f"no cluster {cluster_id!r}")
    rows = await queries.members(pool, cluster_id, limit + 1, after)
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = queries.encode_cursor({"m": int(rows[-1]["id"])})
    return MemberPage(
        items=[
            Member(
                item_id=r["item_id"],
                item_type=r["item_type"],
                document_id=r["document_id"],
                similarity=r["similarity"],
                event_time=assemble.iso(r["event_time"]),
            )
            for r in rows
        ],
        next_cursor=nxt,
    )


@router.get(
    "/clusters/{cluster_id}/history",
    response_model=HistoryPage,
    summary="The cluster's change events in order (incl. merges into and splits off it)",
)
async def get_history(
    request: Request,
    cluster_id: ClusterId,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=1024, pattern=NO_NUL)] = None,
) -> HistoryPage:
    import json

    pool = _pool(request)
    limit = min(limit, _settings(request).list_limit_max)
    after = None
    if cursor is not None:
        c = queries.decode_cursor(cursor)
        seq, eid = c.get("q"), c.get("e")
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(eid, str):
            raise invalid("query.cursor", "not a cursor this API issued")
        after = (seq, eid)
    rows = await queries.history(pool, cluster_id, limit + 1, after)
    if not rows and after is None and await queries.cluster_row(pool, cluster_id) is None:
        raise ApiError(404, f"no cluster {cluster_id!r}")
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = queries.encode_cursor({"q": int(rows[-1]["sequence"]), "e": rows[-1]["event_id"]})
    return HistoryPage(
        items=[
            HistoryEvent(
                event_id=r["event_id"],
                kind=r["kind"],
                cluster_id=r["cluster_id"],
                related_ids=list(r["related_ids"]),
                event_time=assemble.iso(r["event_time"]),
                sequence=r["sequence"],
                payload=json.loads(r["payload"]),
            )
            for r in rows
        ],
        next_cursor=nxt,
    )


@router.post(
    "/clusters/search",
    response_model=SearchResult,
    summary="Search clusters by metadata filters, a query vector and/or label text",
)
async def search(request: Request, body: SearchRequest) -> Response:
    f = body.filters
    pool = _pool(request)
    cache = _cache(request)
    key = body.model_dump(mode="json")
    hit = await cache.get_answer("search", key)
    if hit is not None:
        return _json(hit, True)
    words = body.text.split() if body.text else []
    hits: list[SearchHit] = []
    if body.vector is not None:
        if f.scope is None:
            raise invalid("body.filters.scope", "a vector search needs the scope to compare in")
        q = np.asarray(body.vector, dtype=np.float64)
        norm = float(np.linalg.norm(q))
        if not np.isfinite(q).all() or norm == 0.0:
            raise invalid("body.vector", "must be finite and not all zero")
        all_rows, all_mat = await _centroid_matrix(request, f)
        keep = [i for i, r in enumerate(all_rows) if _label_has(r["label"], words)]
        rows = [all_rows[i] for i in keep]
        if rows:
            if all_mat is None:
                raise ApiError(409, f"scope {f.scope!r} holds centroids of several dimensions")
            mat = all_mat[keep]
            if mat.shape[1] != q.shape[0]:
                raise invalid(
                    "body.vector", f"has {q.shape[0]} dimensions, the scope uses {mat.shape[1]}"
                )
            sims = mat @ (q / norm)
            order = np.argsort(-sims, kind="stable")[: body.top_k]
            for i in order:
                sim = float(sims[i])
                if sim < body.min_similarity:
                    break
                hits.append(_hit(rows[int(i)], round(sim, 6)))
    else:
        rows = await queries.search_text(pool, f, words, body.top_k)
        hits = [_hit(r, None) for r in rows]
    result = SearchResult(items=hits)
    payload = result.model_dump_json().encode()
    await cache.put_answer("search", key, payload)
    return _json(payload, False)


async def _centroid_matrix(
    request: Request, f: Filters
) -> tuple[list[Any], npt.NDArray[np.float64] | None]:
    """The filtered clusters' rows and centroid matrix (None: mixed dimensions), reused for
    CLUSTERER_API_CACHE_SECONDS per filter set: a big scope's centroids are megabytes, read
    once for a burst of searches rather than per search."""
    ttl = _settings(request).cache_seconds
    store: dict[str, tuple[float, list[Any], Any]] = request.app.state.centroid_cache
    key = f.model_dump_json()
    now = time.monotonic()
    got = store.get(key)
    if got is not None and now - got[0] < ttl:
        return got[1], got[2]
    rows = await queries.centroids(_pool(request), f)
    vecs = [np.frombuffer(bytes(r["centroid"]), dtype="<f4") for r in rows]
    mat = None
    if len({v.shape[0] for v in vecs}) <= 1:
        mat = np.vstack(vecs).astype(np.float64) if vecs else np.zeros((0, 0))
    if ttl > 0:
        if len(store) > 64:  # a few scopes are searched; bound the memory anyway
            store.clear()
        store[key] = (now, rows, mat)
    return rows, mat


def _label_has(label: str | None, words: list[str]) -> bool:
    low = (label or "").lower()
    return all(w.lower() in low for w in words)


def _hit(row: Any, sim: float | None) -> SearchHit:
    return SearchHit.model_validate({**assemble.cluster_summary(row), "similarity": sim})


# ---------------------------------------------------------------------- items
@router.get(
    "/items/{item_id}",
    response_model=ItemClusters,
    summary="The item's cluster in every scope (Redis first, PostgreSQL otherwise)",
)
async def get_item(
    request: Request, item_id: Annotated[str, Path(min_length=1, max_length=512, pattern=NO_NUL)]
) -> Response:
    # the hot path of Stage 7: dicts straight to orjson (the shape is ItemClusters, checked
    # by the fuzz test against the spec), no model round trip
    cached = await _cache(request).item(item_id)
    if cached is not None and cached[0]:
        pairs, summaries = cached
        missing = [cid for _, cid in pairs if cid not in summaries]
        rows = await queries.cluster_rows(_pool(request), missing) if missing else {}
        out: list[dict[str, Any]] = []
        for scope, cid in pairs:
            sm = summaries.get(cid)
            cl = assemble.summary_from_cache(cid, sm) if sm is not None else None
            if cl is None and cid in rows:
                cl = assemble.cluster_summary(rows[cid])
            out.append({"scope": scope, "cluster_id": cid, "cluster": cl})
        return _orjson({"item_id": item_id, "memberships": out, "source": "cache"})
    found = await queries.item_memberships(_pool(request), item_id)
    if not found:
        raise ApiError(404, f"item {item_id!r} is in no cluster")
    memberships = [
        {
            "scope": r["member_scope"],
            "cluster_id": r["member_cluster"],
            "cluster": assemble.cluster_summary(r) if r["id"] is not None else None,
        }
        for r in found
    ]
    return _orjson({"item_id": item_id, "memberships": memberships, "source": "database"})


def _orjson(obj: Any) -> Response:
    return Response(orjson.dumps(obj), media_type="application/json")


# ---------------------------------------------------------------------- live view feeds
@router.get(
    "/events",
    response_model=EventPage,
    summary="Recent change events across clusters, oldest first; poll with the cursor",
)
async def recent_events(
    request: Request,
    scope: Annotated[str | None, Query(min_length=1, max_length=1024, pattern=NO_NUL)] = None,
    kind: Annotated[list[ChangeKind] | None, Query(description="repeatable; default all")] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024, pattern=NO_NUL)] = None,
) -> Response:
    limit = min(limit, _settings(request).list_limit_max)
    after = None
    if cursor is not None:
        c = queries.decode_cursor(cursor)
        at, eid = c.get("t"), c.get("e")
        if not isinstance(at, int | float) or isinstance(at, bool) or not isinstance(eid, str):
            raise invalid("query.cursor", "not a cursor this API issued")
        after = (float(at), eid)
    kinds: list[str] | None = sorted(set(kind)) if kind else None
    rows = await queries.recent_events(_pool(request), limit, after, scope, kinds)
    nxt: str | None
    if rows:
        nxt = queries.encode_cursor({"t": rows[-1]["stored"], "e": rows[-1]["event_id"]})
    else:
        nxt = cursor
    items = [
        {
            "event_id": r["event_id"],
            "kind": r["kind"],
            "cluster_id": r["cluster_id"],
            "scope": r["cluster_type"],
            "related_ids": list(r["related_ids"]),
            "event_time": assemble.iso(r["event_time"]),
            "sequence": r["sequence"],
            "payload": orjson.loads(r["payload"]),
        }
        for r in rows
    ]
    return _orjson({"items": items, "next_cursor": nxt})


@router.get(
    "/map",
    response_model=ScopeMap,
    summary="A scope's active centroids on their first two principal components (PCA)",
)
async def scope_map(
    request: Request,
    scope: Annotated[str, Query(min_length=1, max_length=1024, pattern=NO_NUL)],
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> ScopeMap:
    rows = await queries.centroids(_pool(request), Filters(scope=scope))
    rows = sorted(rows, key=lambda r: (-int(r["size"]), r["id"]))[:limit]
    mats = [np.frombuffer(bytes(r["centroid"]), dtype="<f4") for r in rows]
    dims = {m.shape[0] for m in mats}
    if len(dims) > 1:
        raise ApiError(409, f"scope {scope!r} holds centroids of several dimensions")
    if not rows:
        return ScopeMap(scope=scope, explained_variance=[], points=[])
    x = np.vstack(mats).astype(np.float64)
    xc = x - x.mean(axis=0)
    # SVD of the centred centroids: deterministic up to sign, fixed by making the largest
    # loading of each component positive
    _, sv, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]
    comps *= np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])[:, None]
    xy = xc @ comps.T
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((xy.shape[0], 2 - xy.shape[1]))])
    total = float((sv**2).sum())
    explained = [round(float(v**2) / total, 4) if total > 0 else 0.0 for v in sv[:2]]
    return ScopeMap(
        scope=scope,
        explained_variance=explained,
        points=[
            MapPoint(
                cluster_id=r["id"],
                cluster_label=r["label"],
                cluster_size=int(r["size"]),
                x=round(float(xy[i, 0]), 6),
                y=round(float(xy[i, 1]), 6),
                last_event_time=assemble.iso(r["last_event_time"]),
            )
            for i, r in enumerate(rows)
        ],
    )


# ---------------------------------------------------------------------- statistics
class LagProbe:
    """Consumer lag from Kafka (committed offsets vs high watermarks, as `clusterer lag`),
    reused for a few seconds; reported as unknown when the broker does not answer in time."""

    KEEP_SECONDS = 5.0

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self._at = -1e9
        self._last: ConsumerLag | None = None
        self._lock = asyncio.Lock()

    def _probe(self) -> tuple[list[Any], int]:
        from confluent_kafka import Consumer, TopicPartition

        from stream.ops import lag

        rows = lag(self.settings, self.timeout)
        c = Consumer(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "clusterer-api"}
        )
        try:
            topic = self.settings.dlq_topic
            md = c.list_topics(topic, timeout=self.timeout).topics.get(topic)
            dead = 0
            for p in sorted(md.partitions) if md is not None and md.error is None else []:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout)
                dead += max(hi - lo, 0)
        finally:
            c.close()
        return rows, dead

    async def get(self) -> ConsumerLag:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._at < self.KEEP_SECONDS:
                return self._last
            try:
                rows, dead = await asyncio.wait_for(
                    asyncio.to_thread(self._probe), self.timeout * 4 + 1
                )
                out = ConsumerLag(
                    status="ok",
                    total=sum(r.lag for r in rows),
                    dead_letters=dead,
                    partitions=[
                        PartitionLag(
                            group=r.group,
                            topic=r.topic,
                            partition=r.partition,
                            committed=r.committed,
                            high_watermark=r.high_watermark,
                            lag=r.lag,
                        )
                        for r in rows
                    ],
                )
            except Exception as exc:  # lag is advisory: never fail the statistics for it
                detail = f"kafka did not answer: {type(exc).__name__}"
                out = ConsumerLag(status="unknown", detail=detail)
            self._last, self._at = out, time.monotonic()
            return out


@router.get("/statistics", response_model=Statistics, summary="Per-scope statistics and lag")
async def statistics(request: Request) -> Response:
    cache = _cache(request)
    hit = await cache.get_answer("statistics", {})
    if hit is not None:
        return _json(hit, True)
    raw = await queries.statistics(_pool(request))
    scopes: dict[str, dict[str, Any]] = {}
    for r in raw["by_status"]:
        sc = scopes.setdefault(
            r["cluster_type"],
            {
                "scope": r["cluster_type"],
                "embedding_type": r["etype"],
                "clusters": {},
                "items": 0,
                "last": None,
                "reconsolidation_runs": 0,
                "reconsolidations_skipped": 0,
            },
        )
        sc["clusters"][r["status"]] = int(r["n"])
        if r["last"] is not None and (sc["last"] is None or r["last"] > sc["last"]):
            sc["last"] = r["last"]
    for r in raw["items"]:
        if r["cluster_type"] in scopes:
            scopes[r["cluster_type"]]["items"] = int(r["n"])
    for r in raw["runs"]:
        if r["cluster_type"] in scopes:
            scopes[r["cluster_type"]]["reconsolidation_runs"] = int(r["done"])
            scopes[r["cluster_type"]]["reconsolidations_skipped"] = int(r["skipped"])
    lag: LagProbe = request.app.state.lag
    stats = Statistics(
        scopes=[
            ScopeStatistics(
                **{k: v for k, v in sc.items() if k != "last"},
                last_event_time=assemble.iso(sc["last"]),
            )
            for _, sc in sorted(scopes.items())
        ],
        consumer_lag=await lag.get(),
        batch_jobs={r["status"]: int(r["n"]) for r in raw["jobs"]},
        storage={
            t: TableStorage(rows=v.rows, bytes=v.bytes, oldest_age_seconds=v.oldest_age_seconds)
            for t, v in raw["storage"].items()
        },
    )
    body = stats.model_dump_json().encode()
    await cache.put_answer("statistics", {}, body)
    return _json(body, False)
