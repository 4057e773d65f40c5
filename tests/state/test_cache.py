"""The Redis cache against the real Redis (dev/services.sh)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from state.cache import Cache
from tests.conftest import Services


def _cache(services: Services) -> Cache:
    return Cache(services.redis, f"cachetest{uuid.uuid4().hex[:8]}")


def test_apply_writes_what_a_batch_changed_and_the_last_summary_wins(services: Services) -> None:
    c = _cache(services)
    r = c.client
    try:
        assert c.apply([("doc", "a", "c1"), ("doc", "b", "c1"), ("ent", "x", "c9")], [], [])
        assert c.apply(
            [("doc", "c", "c2")],
            [("doc", "a")],
            [("c1", '{"size":1}'), ("c2", '{"size":1}'), ("c1", None), ("c3", None)],
        )
        assert r.hgetall(c.items_key("doc")) == {b"b": b"c1", b"c": b"c2"}
        assert r.hgetall(c.items_key("ent")) == {b"x": b"c9"}
        assert r.hgetall(c.clusters_key) == {b"c2": b'{"size":1}'}
        # a cluster deleted then summarised again in one batch ends with its summary
        assert c.apply([], [], [("c2", None), ("c2", '{"size":2}')])
        assert r.hget(c.clusters_key, "c2") == b'{"size":2}'
    finally:
        for key in r.scan_iter(match=f"{c.prefix}:*"):
            r.delete(key)


def test_rebuild_replaces_the_cache_with_postgres_view(services: Services) -> None:
    c = _cache(services)
    r = c.client
    try:
        assert c.apply([("doc", "stale", "c0")], [], [("c0", "{}")])

        async def memberships() -> AsyncIterator[list[tuple[str, str, str]]]:
            yield [("doc", "a", "c1"), ("doc", "b", "c1")]
            yield [("ent", "x", "c2")]

        async def summaries() -> list[tuple[str, str]]:
            return [("c1", '{"size":2}'), ("c2", '{"size":1}')]

        n = asyncio.run(c.rebuild(memberships, summaries))
        assert n == 3
        assert not c.needs_rebuild
        assert r.hgetall(c.items_key("doc")) == {b"a": b"c1", b"b": b"c1"}
        assert r.hgetall(c.items_key("ent")) == {b"x": b"c2"}
        assert set(r.hkeys(c.clusters_key)) == {b"c1", b"c2"}
    finally:
        for key in r.scan_iter(match=f"{c.prefix}:*"):
            r.delete(key)
