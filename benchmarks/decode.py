"""Router decode cost per message: the current path (orjson, vectors by numpy, pydantic on
the rest) against the previous one (json.loads, pydantic validating the float list in lax
mode, then a Python check per element), interleaved in one run. Medians of 7 rounds.

    .venv/bin/python -m benchmarks.decode
"""

from __future__ import annotations

import base64
import json
import statistics
import time
from typing import Any

import numpy as np
from pydantic import BaseModel

from schemas.messages import decode_message
from schemas.validation import check_vector


class _OldEvent(BaseModel):  # the previous contract: list[float] | str, lax
    item_id: str
    document_id: str | None = None
    embedding_type: str
    embedding_model: str
    event_time: float
    metadata: dict[str, Any] = {}
    vector: list[float] | str


def _old(payload: bytes) -> np.ndarray:
    ev = _OldEvent.model_validate(json.loads(payload))
    raw = ev.vector
    if isinstance(raw, str):
        return check_vector(np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4"))
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        raise ValueError("non-numbers")
    return check_vector(np.asarray(raw, dtype=np.float64).astype(np.float32))


def _time(fn: Any, payload: bytes, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn(payload)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    for dim in (384, 768):
        v = rng.standard_normal(dim).astype(np.float32)
        v /= np.linalg.norm(v)
        base = {
            "item_id": "i", "document_id": "d", "embedding_type": "document",
            "embedding_model": "m", "event_time": 1.7e9, "metadata": {"title": "a b c"},
        }  # fmt: skip
        for form, vec in (("json", v.tolist()), ("base64", base64.b64encode(v.tobytes()).decode())):
            payload = json.dumps({**base, "vector": vec}).encode()
            new, old = [], []
            for _ in range(7):
                new.append(_time(decode_message, payload, 2000))
                old.append(_time(_old, payload, 2000))
            n, o = statistics.median(new), statistics.median(old)
            print(f"{dim}-d {form:6s}: now {n:6.1f} us, before {o:6.1f} us, {o / n:4.1f}x faster")


if __name__ == "__main__":
    main()
