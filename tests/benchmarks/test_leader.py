import numpy as np

import processors.scope as scope_mod
from benchmarks.leader import leader
from benchmarks.steps import StepTimer
from processors import Batch, Engine, EngineConfig
from tests.conftest import blobs


def test_leader_joins_at_the_threshold_and_opens_below_it() -> None:
    x = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1], [0.3, 0.95, 0]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # 2nd: cosine 0.6 to the first -> joins; 3rd: cosine 0 -> opens; 4th: nearest is the
    # running mean of the first two (cosine ~0.89) -> joins it
    assert leader(x).tolist() == [0, 0, 1, 0]
    assert leader(x, threshold=0.7).tolist() == [0, 1, 2, 1]


def test_leader_recovers_separated_topics() -> None:
    x, truth = blobs(300, 16, 5, seed=3, spread=0.1)
    labels = leader(x.astype(np.float32))
    assert len(set(labels.tolist())) == 5
    assert all(len(set(truth[labels == c].tolist())) == 1 for c in set(labels.tolist()))


def test_step_timer_times_steps_and_restores_the_engine() -> None:
    before = scope_mod.ScopeState.assign
    with StepTimer() as steps:
        x, _ = blobs(200, 8, 3, seed=1)
        eng = Engine(EngineConfig())
        for s in (0, 100):  # the second batch searches the clusters of the first
            eng.learn(Batch(x[s : s + 100], [str(i) for i in range(s, s + 100)], np.zeros(100)))
    assert scope_mod.ScopeState.assign is before
    timed = steps.per_item_us(200)
    assert timed["assign"] > 0 and timed["search"] > 0 and timed["kernel"] > 0
    assert timed["assign"] >= timed["search"]
