"""Router decode cost per message.

Without arguments: the current path (orjson, vectors by numpy, pydantic on the rest) against
the issue-9 predecessor (json.loads, pydantic validating the float list in lax mode, then a
Python check per element), interleaved in one run. Medians of 7 rounds.

With `--baseline DIR` (a checkout of another commit, e.g. `git archive <commit> | tar -x -C
DIR`): the router's whole per-message CPU step outside Kafka (decode, validation, record
encoding, by-scope key) of this tree against DIR's, each in its own process importing its
own tree, alternated round by round on the same messages; the outputs (records, keys, and
the reason, detail and error class of every reject of a catalogue of bad messages) must be
byte-identical between the two trees, or the run fails.

    .venv/bin/python -m benchmarks.decode
    .venv/bin/python -m benchmarks.decode --baseline DIR
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
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


ROOT = Path(__file__).resolve().parents[1]

# Runs inside each tree (cwd = that tree), so it may use only what both trees have.
_STEP = r"""
import hashlib, json, sys, time
from processors import Engine, EngineConfig
from schemas.messages import decode_message
from schemas.validation import InputError
from stream import records
eng = Engine(EngineConfig())
def name(ev):
    return eng.scope_key(ev.embedding_type, ev.embedding_model, ev.metadata).name.encode()
def step(p):
    return [(records.encode_event(ev), name(ev)) for ev in decode_message(p)]
kinds = json.load(open(sys.argv[1]))
reps = int(sys.argv[2])
out = {}
for kind, hexes in kinds.items():
    msgs = [bytes.fromhex(h) for h in hexes]
    digest = hashlib.sha256()
    for p in msgs:
        try:
            for body, key in step(p):
                digest.update(key + b"|" + body)
        except InputError as e:
            digest.update(repr((e.reason, e.detail, e.error_class)).encode())
    t0 = time.perf_counter()
    for _ in range(reps):
        for p in msgs:
            try:
                step(p)
            except InputError:
                pass
    us = (time.perf_counter() - t0) / (reps * len(msgs)) * 1e6
    out[kind] = [us, digest.hexdigest()]
print(json.dumps(out))
"""


def _bad_messages() -> list[bytes]:
    """One of each kind of reject the decode path words (the poison issue's catalogue)."""
    ok: dict[str, Any] = {
        "item_id": "i", "embedding_type": "event", "embedding_model": "m",
        "event_time": 1.7e9, "vector": [0.6, 0.8],
    }  # fmt: skip
    bad: list[Any] = [
        b"not json", b'{"item_id": "i"', b"[1, 2]", b'"text"', b"\xff\xfe",
        {**ok, "item_id": ""}, {**ok, "item_id": "x" * 5000}, {**ok, "embedding_type": "bogus"},
        {**ok, "vector": [True, False]}, {**ok, "vector": ["1", "2"]}, {**ok, "vector": []},
        {**ok, "vector": [0.0, 0.0]}, {**ok, "vector": "!!!"}, {**ok, "vector": "AAA="},
        {**ok, "vector": [1.0] * 9000}, {**ok, "event_time": "yesterday"},
        {**ok, "event_time": 1e20}, {**ok, "event_time": True}, {**ok, "metadata": [1]},
        {**ok, "metadata": {"k": list(range(20_000))}}, {**ok, "metadata": {"s": "x" * 70_000}},
        {k: v for k, v in ok.items() if k != "vector"}, {**ok, "document_id": 5},
    ]  # fmt: skip
    out = [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bad]
    out.append(b'{"item_id": "i", "vector": [NaN, 1.0]}')
    out.append(b'{"metadata": ' + b"[" * 20_000 + b"]" * 20_000 + b"}")
    out.append(
        json.dumps(
            {
                **ok,
                "metadata": {
                    "a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                },
            }
        ).encode()
    )
    return out


def _messages(n: int) -> dict[str, list[str]]:
    from stream import synthetic

    kinds: dict[str, list[str]] = {}
    for dim in (384, 768):
        items = list(synthetic.stories(n, dim, seed=dim))
        b64 = [synthetic.vector_event(i) for i in items]
        arrays = []
        for p in b64:
            obj = json.loads(p)
            obj["vector"] = np.frombuffer(base64.b64decode(obj["vector"]), "<f4").tolist()
            arrays.append(json.dumps(obj, separators=(",", ":")).encode())
        kinds[f"{dim}-d base64 event"] = [p.hex() for p in b64]
        kinds[f"{dim}-d JSON-array event"] = [p.hex() for p in arrays]
        kinds[f"{dim}-d Stage 3 document"] = [synthetic.embedded_document(i).hex() for i in items]
    kinds["rejects (catalogue)"] = [p.hex() for p in _bad_messages()]
    return kinds


def compare(baseline: Path, rounds: int, n: int, reps: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(_messages(n), f)
        f.flush()
        runs: dict[str, list[dict[str, list[Any]]]] = {"base": [], "now": []}
        for _ in range(rounds):
            for side, tree in (("base", baseline), ("now", ROOT)):
                res = subprocess.run(
                    [sys.executable, "-c", _STEP, f.name, str(reps)],
                    cwd=tree, check=True, capture_output=True, text=True,
                    env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                )  # fmt: skip
                runs[side].append(json.loads(res.stdout))
    print("| message | baseline µs | now µs | ratio | outputs |")
    print("| --- | --- | --- | --- | --- |")
    for kind in runs["now"][0]:
        b = statistics.median(r[kind][0] for r in runs["base"])
        n_ = statistics.median(r[kind][0] for r in runs["now"])
        same = {r[kind][1] for r in runs["base"] + runs["now"]}
        verdict = "identical" if len(same) == 1 else "DIFFERENT"
        print(f"| {kind} | {b:.1f} | {n_:.1f} | {b / n_:.2f}x | {verdict} |")
        if len(same) != 1:
            raise SystemExit(f"outputs differ for {kind}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="another tree to compare the router step with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=200, help="messages of each kind")
    ap.add_argument("--reps", type=int, default=10, help="passes over them per round")
    args = ap.parse_args()
    if args.baseline is None:
        main()
    else:
        compare(args.baseline.resolve(), args.rounds, args.messages, args.reps)
