from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.synthetic import blobs

__all__ = ["blobs"]


@pytest.fixture
def small_stream() -> tuple[np.ndarray, np.ndarray]:
    return blobs(600, 32, 6, seed=7)


# --------------------------------------------------------------------------- real services
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Services:
    """The real broker, database and cache started by dev/services.sh (once per session)."""

    kafka: str
    postgres: str
    redis: str
    pg_port: int
    redis_port: int


@pytest.fixture(scope="session")
def services() -> Services:
    subprocess.run([str(ROOT / "dev" / "services.sh"), "up"], check=True, timeout=600)
    kafka = os.environ.get("CLUSTERER_KAFKA_PORT", "19092")
    pg = int(os.environ.get("CLUSTERER_PG_PORT", "15432"))
    rd = int(os.environ.get("CLUSTERER_REDIS_PORT", "16379"))
    dsn = f"postgresql://postgres@127.0.0.1:{pg}/clusterer"
    import asyncio

    from state.db import migrate

    asyncio.run(migrate(dsn))
    return Services(f"127.0.0.1:{kafka}", dsn, f"redis://127.0.0.1:{rd}/0", pg, rd)


def admin_sql(services: Services | str, *statements: str) -> None:
    """Statements on the maintenance database (CREATE/DROP DATABASE cannot run in a pool):
    the services' database, or the one a DSN names."""
    import asyncio

    import asyncpg

    dsn = services if isinstance(services, str) else services.postgres

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for st in statements:
                await conn.execute(st)
        finally:
            await conn.close()

    asyncio.run(go())


@contextlib.contextmanager
def own_database(admin_dsn: str, name: str, keep: bool = False) -> Iterator[str]:
    """A new migrated database `name` on the server of `admin_dsn`; yields its DSN and drops
    it afterwards unless `keep` (tests and benchmarks: none sees another's rows). `name`:
    lower-case letters, digits and underscores."""
    import asyncio

    from state.db import migrate

    if not name.replace("_", "").isalnum() or name.lower() != name:
        raise ValueError(f"not a plain database name: {name!r}")
    admin_sql(admin_dsn, f"CREATE DATABASE {name}")
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        if not keep:
            admin_sql(admin_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def fresh_database(services: Services) -> Iterator[tuple[str, str]]:
    """(name, dsn) of a new, migrated database, dropped after the test: no test sees another
    test's rows. The name doubles as a unique prefix for topics and groups."""
    name = f"t{uuid.uuid4().hex[:10]}"
    with own_database(services.postgres, name) as dsn:
        yield name, dsn


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll a condition until it holds (returns its value) or fail with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
