"""A PostgreSQL database and a Redis namespace of a benchmark run's own, removed when it ends.

Runs used to share the dev database: it kept every earlier run's rows, and each new worker's
cache rebuild copied all of them into Redis under the run's own prefix. Over an afternoon of
latency runs Redis grew to 21 GB of the machine's 24 and swapped it, and every run measured
a database larger than the last (docs/benchmarks.md, run 7).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg

from state.cache import Cache
from state.db import migrate


async def _admin(dsn: str, sql: str) -> None:
    """CREATE/DROP DATABASE cannot run in a transaction or a pool: one connection each."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def own_database(admin_dsn: str, name: str, keep: bool = False) -> Iterator[str]:
    """A new migrated database `name` on the server of `admin_dsn`; yields its DSN and drops
    it afterwards unless `keep`. `name`: lower-case letters, digits and underscores."""
    if not name.replace("_", "").isalnum() or name.lower() != name:
        raise ValueError(f"not a plain database name: {name!r}")
    asyncio.run(_admin(admin_dsn, f"CREATE DATABASE {name}"))
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        if not keep:
            asyncio.run(_admin(admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@contextlib.contextmanager
def own_state(admin_dsn: str, redis_url: str, prefix: str) -> Iterator[str]:
    """`own_database` named after the run's prefix, and its Redis keys removed at the end."""
    try:
        with own_database(admin_dsn, prefix) as dsn:
            yield dsn
    finally:
        Cache(redis_url, prefix).clear()
