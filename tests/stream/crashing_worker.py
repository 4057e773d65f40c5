"""`clusterer` whose process dies on marked records: a stand-in for a bug that one record
triggers (in the router's handling of an input message, or in the clustering of a routed
event), outside every per-message error handler. Used by tests/stream/test_poison.py."""

from __future__ import annotations

import os
import sys
from typing import Any

from stream import cli, router, worker

_route = router.Router._route
_run_engine = worker.Worker._run_engine


def _dying_route(self: router.Router, m: Any) -> None:
    if b"crash-router" in (m.value() or b""):
        os._exit(7)
    _route(self, m)


def _dying_run_engine(self: worker.Worker, run: Any, ms: list[Any], *args: Any) -> Any:
    if any(b"crash-worker" in (m.value() or b"") for m in ms):
        os._exit(7)
    return _run_engine(self, run, ms, *args)


router.Router._route = _dying_route  # type: ignore[method-assign,assignment]
worker.Worker._run_engine = _dying_run_engine  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
