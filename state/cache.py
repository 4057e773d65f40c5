"""Redis cache of item -> cluster and of cluster summaries. A cache only: every write may be
lost; when Redis is unreachable the worker keeps clustering, reports it, and rebuilds the
cache from Postgres once Redis answers again."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import redis
from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)


class Cache:
    def __init__(self, url: str, prefix: str, retry_seconds: float = 2.0) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = prefix
        self.retry_seconds = retry_seconds
        self.degraded = False
        self.needs_rebuild = True  # a new worker does not trust what it finds
        self._next_try = 0.0

    def items_key(self, cluster_type: str) -> str:
        return f"{self.prefix}:items:{cluster_type}"

    @property
    def clusters_key(self) -> str:
        return f"{self.prefix}:clusters"

    def _fail(self, exc: Exception) -> None:
        if not self.degraded:
            log.warning("redis unavailable, clustering continues without the cache: %s", exc)
        self.degraded = True
        self.needs_rebuild = True
        self._next_try = time.monotonic() + self.retry_seconds

    def available(self) -> bool:
        """False while degraded and before the next retry is due; probes Redis when due."""
        if not self.degraded:
            return True
        if time.monotonic() < self._next_try:
            return False
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self._fail(exc)
            return False
        log.warning("redis is back; rebuilding the cache from postgres")
        self.degraded = False
        return True

    def apply(
        self,
        assigned: list[tuple[str, str, str]],
        removed: list[tuple[str, str]],
        summaries: list[tuple[str, str | None]],
    ) -> bool:
        """(cluster_type, item_id, cluster_id) set, (cluster_type, item_id) deleted, and
        (cluster_id, summary JSON or None to delete). Returns False when Redis failed."""
        if not self.available():
            return False
        # one HSET/HDEL per hash with many fields: redis-py packs each command in Python,
        # so per-item commands cost ~3x more (docs/benchmarks.md). Same end state as the
        # sequence set, delete, summaries (last one per cluster wins).
        sets: dict[str, dict[FieldT, EncodableT]] = {}
        for ct, item, cid in assigned:
            sets.setdefault(self.items_key(ct), {})[item] = cid
        dels: dict[str, list[str]] = {}
        for ct, item in removed:
            dels.setdefault(self.items_key(ct), []).append(item)
        latest = dict(summaries)
        keep: dict[FieldT, EncodableT] = {
            cid: summary for cid, summary in latest.items() if summary is not None
        }
        drop = [cid for cid, summary in latest.items() if summary is None]
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, mapping in sets.items():
                pipe.hset(key, mapping=mapping)
            for key, fields in dels.items():
                pipe.hdel(key, *fields)
            if keep:
                pipe.hset(self.clusters_key, mapping=keep)
            if drop:
                pipe.hdel(self.clusters_key, *drop)
            pipe.execute()
            return True
        except redis.RedisError as exc:
            self._fail(exc)
            return False

    def clear(self) -> None:
        """Delete every key of this prefix (raises RedisError): before a rebuild, and where a
        run's namespace goes away (tests, benchmarks)."""
        for key in self.client.scan_iter(match=f"{self.prefix}:*"):
            self.client.delete(key)

    async def rebuild(
        self,
        memberships: Callable[[], object],
        summaries: Callable[[], Awaitable[list[tuple[str, str]]]],
    ) -> int:
        """Replace the cache with Postgres's view. `memberships()` yields chunks of
        (cluster_type, item_id, cluster_id). Returns the number of items written."""
        n = 0
        try:
            self.clear()
            async for chunk in memberships():  # type: ignore[attr-defined]
                sets: dict[str, dict[FieldT, EncodableT]] = {}
                for ct, item, cid in chunk:
                    sets.setdefault(self.items_key(ct), {})[item] = cid
                pipe = self.client.pipeline(transaction=False)
                for key, mapping in sets.items():
                    pipe.hset(key, mapping=mapping)
                pipe.execute()
                n += len(chunk)
            rows = await summaries()
            if rows:
                self.client.hset(self.clusters_key, mapping=dict(rows))
        except redis.RedisError as exc:
            self._fail(exc)
            return n
        self.needs_rebuild = False
        return n
