import numpy as np

from processors import Batch, Engine, EngineConfig
from stream.assignments import assignment_values


def test_assignment_values_are_the_assignment_models_json_byte_for_byte() -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 16)).astype(np.float32)
    vecs = centres[rng.integers(0, 4, 300)] + 0.05 * rng.standard_normal((300, 16))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    eng = Engine(EngineConfig())
    key = eng.scope_key("document", "m", {})
    n = len(vecs)
    res = eng.learn(
        Batch(
            vecs,
            [f"i{i}" for i in range(n)],
            np.arange(n, dtype=np.float64) * 0.37 + 1_700_000_000.0,
            [f"d{i}" if i % 3 else None for i in range(n)],
            [{} for _ in range(n)],
            [key] * n,
        )
    )
    models = res.assignments()
    assert {a.status for a in models} == {"candidate", "active"}  # both codes covered
    assert assignment_values(res) == [a.model_dump_json().encode() for a in models]
