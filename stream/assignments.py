"""The assignments topic's message values, serialised straight from a `BatchResult`'s arrays.

`BatchResult.assignments()` builds one pydantic `Assignment` per item and the worker then
serialised each (about 10 µs per item, a tenth of the worker's per-event budget); this
writes the same JSON (same fields, same order, same float text) with orjson in one pass.
`tests/stream/test_assignments.py` holds it byte for byte to `Assignment.model_dump_json`.
"""

from __future__ import annotations

import functools

import numpy as np
import orjson

from processors import BatchResult


@functools.cache
def status_name(code: int) -> str:
    """The engine's name of a status code, through its own `assignments()` (the coding is
    the engine's, not repeated here)."""
    one = BatchResult(
        item_ids=[""],
        document_ids=[None],
        scopes=[""],
        cluster_ids=[""],
        similarity=np.zeros(1),
        new_cluster=np.zeros(1, bool),
        status=np.asarray([code], np.int8),
        event_time=np.zeros(1),
        sequence=np.zeros(1, np.int64),
    )
    return str(one.assignments()[0].status)


def assignment_values(res: BatchResult) -> list[bytes]:
    """One `schemas.outputs.Assignment` JSON per input item of the result, in input order."""
    dumps = orjson.dumps
    status = [status_name(s) for s in res.status.tolist()]
    return [
        dumps(
            {
                "item_id": item,
                "document_id": doc,
                "scope": scope,
                "cluster_id": cid,
                "status": st,
                "similarity": sim,
                "new_cluster": new,
                "event_time": t,
                "sequence": seq,
            }
        )
        for item, doc, scope, cid, st, sim, new, t, seq in zip(
            res.item_ids,
            res.document_ids,
            res.scopes,
            res.cluster_ids,
            status,
            res.similarity.tolist(),
            res.new_cluster.tolist(),
            res.event_time.tolist(),
            res.sequence.tolist(),
            strict=True,
        )
    ]
