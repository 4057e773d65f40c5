"""A PostgreSQL database (`tests.conftest.own_database`) and a Redis namespace of a benchmark
run's own, removed when it ends.

Runs used to share the dev database: it kept every earlier run's rows, and each new worker's
cache rebuild copied all of them into Redis under the run's own prefix. Over an afternoon of
latency runs Redis grew to 21 GB of the machine's 24 and swapped it, and every run measured
a database larger than the last (docs/benchmarks.md, run 7).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from state.cache import Cache
from tests.conftest import own_database


@contextlib.contextmanager
def own_state(admin_dsn: str, redis_url: str, prefix: str) -> Iterator[str]:
    """`own_database` named after the run's prefix, and its Redis keys removed at the end."""
    try:
        with own_database(admin_dsn, prefix) as dsn:
            yield dsn
    finally:
        Cache(redis_url, prefix).clear()
