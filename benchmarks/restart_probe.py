"""`clusterer worker` with timestamps at the phases of a restart, for benchmarks/restart.py.

The same worker as `python -m stream.cli worker` (the same code path: only wrappers that
note the wall-clock time around calls), writing one JSON line per phase to the file named by
`RESTART_PROBE_OUT`: interpreter up, imports done, service started, each partition take-over
(with the checkpoint load from PostgreSQL and `Engine.restore` inside it), replayed and fresh
engine calls, the router's first routed batch, and every batch commit with its offsets.
Wall-clock (`time.time()`) because the benchmark compares them with its own clock.
"""

from __future__ import annotations

import time

_T_PYTHON = time.time()  # before the heavy imports

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from processors import Engine  # noqa: E402
from state.db import BatchWrite, PartitionState, Store  # noqa: E402
from stream import cli, protocol, router, service, worker  # noqa: E402

_OUT = open(os.environ["RESTART_PROBE_OUT"], "a", buffering=1)  # noqa: SIM115 - whole process


def note(event: str, **fields: Any) -> None:
    _OUT.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")


def _timed(event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        out = fn(*args, **kwargs)
        note(event, start=t0)
        return out

    return wrapper


_load_partition = Store.load_partition


async def _timed_load(self: Store, group: str, topic: str, partition: int) -> PartitionState:
    t0 = time.time()
    st = await _load_partition(self, group, topic, partition)
    size = len(st.checkpoint) if st.checkpoint else 0
    note("checkpoint_loaded", start=t0, partition=partition, bytes=size)
    return st


_restore = Engine.restore.__func__  # type: ignore[attr-defined]


def _timed_restore(cls: type[Engine], data: bytes) -> Engine:
    t0 = time.time()
    eng: Engine = _restore(cls, data)
    note("restored", start=t0, bytes=len(data))
    return eng


_run_engine = worker.Worker._run_engine


def _timed_run_engine(
    self: worker.Worker, run: Any, ms: list[Any], write: Any, pending: Any
) -> Any:
    t0 = time.time()
    out = _run_engine(self, run, ms, write, pending)
    note("engine", start=t0, fresh=write is not None, records=len(ms))
    return out


_commit = protocol.BatchProtocol.commit


def _timed_commit(self: protocol.BatchProtocol, write: BatchWrite, partitions: Any) -> bool:
    t0 = time.time()
    ok = _commit(self, write, partitions)
    offsets = {o.partition: o.next_offset for o in write.offsets}
    note("commit", start=t0, ok=ok, offsets=offsets, checkpoints=len(write.checkpoints))
    return ok


_route_poll = router.Router.poll


def _timed_route(self: router.Router, timeout: float | None = None) -> int:
    t0 = time.time()
    n = _route_poll(self, timeout)
    if n:
        note("routed", start=t0, records=n)
    return n


Store.load_partition = _timed_load  # type: ignore[method-assign]
Engine.restore = classmethod(_timed_restore)  # type: ignore[method-assign,assignment]
worker.Worker._run_engine = _timed_run_engine  # type: ignore[method-assign]
protocol.BatchProtocol.commit = _timed_commit  # type: ignore[method-assign]
protocol.BatchProtocol.take_over = _timed(  # type: ignore[method-assign]
    "take_over", protocol.BatchProtocol.take_over
)
service.Service.start = _timed("service_started", service.Service.start)  # type: ignore[method-assign]
router.Router.poll = _timed_route  # type: ignore[method-assign]

if __name__ == "__main__":
    note("python_up", at=_T_PYTHON)
    note("imported")
    sys.exit(cli.main(sys.argv[1:]))
