"""The API's use of Redis: it reads the hashes the worker keeps (state.cache.Cache's key
names: `<prefix>:items:<scope>` item -> cluster id, `<prefix>:clusters` cluster id ->
summary JSON) and keeps short-lived copies of its own answers under `<prefix>:api:`. Redis
is a cache only: every failure here falls back to PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


# per scope hash holding the item: the key, the cluster id and its summary ('' if none)
_LOOKUP = """
local out = {}
for _, key in ipairs(KEYS) do
  local cid = redis.call('HGET', key, ARGV[1])
  if cid then
    out[#out + 1] = key
    out[#out + 1] = cid
    out[#out + 1] = redis.call('HGET', ARGV[2], cid) or ''
  end
end
return out
"""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class ReadCache:
    SCOPES_SECONDS = 5.0  # how long the list of scope hashes is reused before a new SCAN

    def __init__(self, url: str, prefix: str, answer_seconds: float) -> None:
        self.client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.prefix = prefix
        self.answer_seconds = answer_seconds
        self._scopes: list[str] = []
        self._scopes_at = -1e9
        self._warned = False
        self._lookup: Any = None

    def _failed(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("redis unavailable, answering from postgres: %s", exc)
        self._warned = True

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------------ the worker's hashes
    async def _scope_keys(self) -> list[str]:
        now = time.monotonic()
        if now - self._scopes_at > self.SCOPES_SECONDS:
            keys = [
                k.decode() if isinstance(k, bytes) else str(k)
                async for k in self.client.scan_iter(match=f"{self.prefix}:items:*", count=1000)
            ]
            self._scopes = sorted(keys)
            self._scopes_at = now
        return self._scopes

    async def item(self, item_id: str) -> tuple[list[tuple[str, str]], dict[str, Any]] | None:
        """(scope, cluster id) per scope holding the item, and the cached summaries of those
        clusters; None when Redis cannot answer (then PostgreSQL does). One round trip: a
        script reads every scope hash and the summaries together."""
        try:
            keys = await self._scope_keys()
            if not keys:
                return None
            if self._lookup is None:
                self._lookup = self.client.register_script(_LOOKUP)
            flat = await self._lookup(keys=keys, args=[item_id, f"{self.prefix}:clusters"])
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._warned = False
        cut = len(self.prefix) + len(":items:")
        pairs: list[tuple[str, str]] = []
        summaries: dict[str, Any] = {}
        for i in range(0, len(flat), 3):
            key, cid, summary = (_text(v) for v in flat[i : i + 3])
            pairs.append((key[cut:], cid))
            if summary:
                try:
                    summaries[cid] = json.loads(summary)
                except ValueError:
                    continue
        return pairs, summaries

    # ------------------------------------------------------------------ answers
    def _answer_key(self, kind: str, params: Any) -> str:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
        return f"{self.prefix}:api:{kind}:{digest.hexdigest()[:32]}"

    async def get_answer(self, kind: str, params: Any) -> bytes | None:
        if self.answer_seconds <= 0:
            return None
        try:
            value = await self.client.get(self._answer_key(kind, params))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def put_answer(self, kind: str, params: Any, body: bytes) -> None:
        if self.answer_seconds <= 0:
            return
        try:
            await self.client.set(
                self._answer_key(kind, params), body, px=max(1, int(self.answer_seconds * 1000))
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
