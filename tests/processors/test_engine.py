from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processors import Engine, EngineConfig
from processors.scope import ACTIVE, ScopeKey
from tests.conftest import blobs

CFG = EngineConfig(tick_items=32, min_weight=2.0)


def run(
    x: np.ndarray,
    batch_sizes: list[int] | int,
    cfg: EngineConfig = CFG,
    times: np.ndarray | None = None,
) -> tuple[Engine, list[str], list[str]]:
    """Returns the engine, assignment lines and change-event lines in emission order."""
    eng = Engine(cfg)
    ids = [f"i{i}" for i in range(len(x))]
    t = np.arange(len(x), dtype=float) if times is None else times
    sizes = batch_sizes if isinstance(batch_sizes, list) else [batch_sizes]
    out_a: list[str] = []
    out_c: list[str] = []
    pos, k = 0, 0
    while pos < len(x):
        b = sizes[k % len(sizes)]
        k += 1
        res = eng.process(x[pos : pos + b], ids[pos : pos + b], t[pos : pos + b])
        out_a += [a.model_dump_json() for a in res.assignments()]
        out_c += [c.model_dump_json() for c in res.changes]
        pos += b
    out_c += [c.model_dump_json() for c in eng.flush().changes]
    return eng, out_a, out_c


def snapshot_bytes(eng: Engine) -> str:
    return "\n".join(c.model_dump_json() for c in eng.snapshot(include_candidates=True))


def test_every_input_gets_exactly_one_assignment(small_stream):
    x, _ = small_stream
    eng, assigns, _ = run(x, 100)
    assert len(assigns) == len(x)
    ids = [a.split('"item_id":"')[1].split('"')[0] for a in assigns]
    assert ids == [f"i{i}" for i in range(len(x))]
    members = sum(len(m) for s in eng.scopes.values() for m in s.members)
    assert members == len(x)


def test_clusters_recover_topics(small_stream):
    x, y = small_stream
    eng, _, _ = run(x, 128)
    st_ = next(iter(eng.scopes.values()))
    found = [set(m) for m in st_.members if m]
    # every discovered cluster is pure and the six topics are found
    truth = {f"i{i}": int(y[i]) for i in range(len(y))}
    big = [c for c in found if len(c) >= 10]
    assert len(big) == 6
    for c in big:
        assert len({truth[i] for i in c}) == 1


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    sizes=st.lists(st.integers(1, 70), min_size=1, max_size=5),
    k=st.integers(1, 8),
)
def test_batch_result_equals_one_by_one(seed, sizes, k):
    x, _ = blobs(160, 16, k, seed=seed, spread=0.4)
    assert_batching_invisible(x, sizes, CFG)


def assert_batching_invisible(
    x: np.ndarray, sizes: list[int], cfg: EngineConfig, t: np.ndarray | None = None
) -> None:
    """Assignments, change events and final clusters are byte-identical one by one and in
    the given batch sizes."""
    e1, a1, c1 = run(x, 1, cfg, t)
    e2, a2, c2 = run(x, sizes, cfg, t)
    assert a1 == a2
    assert c1 == c2
    assert snapshot_bytes(e1) == snapshot_bytes(e2)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    sizes=st.lists(st.integers(1, 70), min_size=1, max_size=5),
    gap=st.floats(0.5, 30.0),
)
def test_batch_equals_one_by_one_with_event_time_ticks(seed, sizes, gap):
    """Maintenance due by event time cuts batches exactly where one-by-one would run it."""
    x, _ = blobs(160, 16, 4, seed=seed, spread=0.4)
    cfg = CFG.replace(tick_items=1000, tick_seconds=40.0, half_life_seconds=60.0)
    t = np.cumsum(np.random.default_rng(seed).exponential(gap, len(x)))
    assert_batching_invisible(x, sizes, cfg, t)


def test_a_quiet_scope_is_maintained_by_event_time():
    """Far fewer items than tick_items: faded candidates still retire once enough event time
    has passed, at the first item after it (never by the wall clock)."""
    x = np.eye(16, dtype=np.float32)[:6]  # six unrelated items: six candidates
    quiet = CFG.replace(tick_items=1000, half_life_seconds=100.0, retire_weight=0.5)

    def retired_by_late_item(tick_seconds: float) -> list[str]:
        eng = Engine(quiet.replace(tick_seconds=tick_seconds))
        eng.process(x[:5], [f"i{i}" for i in range(5)], np.arange(5.0))
        late = eng.process(x[5:], ["late"], np.array([5_000.0]))
        return [c.cluster_id for c in late.changes if c.kind == "retired"]

    assert len(retired_by_late_item(1_000.0)) == 5
    assert retired_by_late_item(1e9) == []


def test_determinism_same_bytes_twice(small_stream):
    x, _ = small_stream
    e1, a1, c1 = run(x, 64)
    e2, a2, c2 = run(x, 64)
    assert a1 == a2 and c1 == c2 and snapshot_bytes(e1) == snapshot_bytes(e2)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000))
def test_centroids_stay_unit_norm(seed):
    x, _ = blobs(300, 24, 5, seed=seed, spread=0.5)
    eng, _, _ = run(x, 50)
    for s in eng.scopes.values():
        live = s.live_slots()
        norms = np.linalg.norm(s.cent[live].astype(np.float64), axis=1)
        assert np.allclose(norms, 1.0, atol=1e-5)


def test_decay_is_monotonic_in_event_time(small_stream):
    x, _ = small_stream
    eng, _, _ = run(x[:100], 100)
    s = next(iter(eng.scopes.values()))
    live = s.live_slots()
    ts = [s.watermark + d for d in (0, 10, 1e4, 1e5, 1e6)]
    weights = np.array([s.weight_now(live, t) for t in ts])
    assert (np.diff(weights, axis=0) <= 0).all()
    assert (np.diff(weights, axis=0) < 0).any()


def test_retirement_bounds_live_clusters():
    # a topic every 500 items, each lasting briefly; a day between topics
    cfg = CFG.replace(half_life_seconds=3600.0, retire_weight=0.5)
    parts, times = [], []
    for topic in range(12):
        xt, _ = blobs(100, 16, 1, seed=100 + topic, spread=0.1)
        parts.append(xt)
        times.append(topic * 86_400.0 + np.arange(100))
    x = np.vstack(parts)
    eng, _, changes = run(x, 64, cfg, np.concatenate(times))
    s = next(iter(eng.scopes.values()))
    assert len(s.live_slots()) <= 3
    assert any('"kind":"retired"' in c for c in changes)
    assert len(s.item_slot) <= 300  # members of retired clusters leave memory


def test_capacity_cap_retires_lightest():
    x, _ = blobs(400, 16, 40, seed=3, spread=0.1)
    cfg = CFG.replace(max_clusters_per_scope=10)
    eng, _, changes = run(x, 32, cfg)
    s = next(iter(eng.scopes.values()))
    assert len(s.live_slots()) <= 10 + cfg.tick_items
    assert any('"reason":"capacity"' in c for c in changes)


def test_scopes_never_share_clusters():
    x, _ = blobs(200, 16, 2, seed=5)
    eng = Engine(CFG)
    keys = [
        ScopeKey("event", "model-a") if i % 2 else ScopeKey("event", "model-b") for i in range(200)
    ]
    res = eng.process(x, [f"i{i}" for i in range(200)], np.arange(200.0), scopes=keys)
    by_cluster: dict[str, set[str]] = {}
    for i in range(200):
        by_cluster.setdefault(res.cluster_id(i), set()).add(res.scopes[i].name)
    assert all(len(v) == 1 for v in by_cluster.values())
    assert len(eng.scopes) == 2


def test_deletion_leaves_no_trace(small_stream):
    x, _ = small_stream
    eng, _, _ = run(x[:200], 50)
    victim = "i150"
    found = eng.find_item(victim)
    assert found is not None
    s, slot = found
    before = eng.cluster_result(s, slot)
    events = eng.delete(victim)
    after = eng.cluster_result(s, slot)
    assert victim not in after.member_ids and victim not in after.representative_ids
    assert after.cluster_size == before.cluster_size - 1
    assert after.weight < before.weight
    assert eng.find_item(victim) is None
    assert victim not in s.res_ids[slot]
    assert all(victim not in c.member_ids for c in eng.snapshot(include_candidates=True))
    assert [e.kind for e in events] in (["updated"], [])
    assert eng.delete(victim) == []


def test_deleting_every_member_retires_the_cluster():
    x, _ = blobs(5, 8, 1, seed=1, spread=0.01)
    eng = Engine(CFG)
    eng.process(x, [f"i{i}" for i in range(5)], np.arange(5.0))
    kinds = []
    for i in range(5):
        kinds += [e.kind for e in eng.delete(f"i{i}")]
    s = next(iter(eng.scopes.values()))
    assert len(s.live_slots()) == 0 and not s.item_slot
    assert kinds[-1] == "retired"


def test_resent_item_replaces_the_old_membership(small_stream):
    x, _ = small_stream
    eng = Engine(CFG)
    eng.process(x[:50], [f"i{i}" for i in range(50)], np.arange(50.0))
    eng.process(x[60:61], ["i3"], np.array([51.0]))
    total = sum(len(m) for s in eng.scopes.values() for m in s.members)
    assert total == 50


def test_temporal_weighting_separates_distant_times():
    x, _ = blobs(2, 8, 1, seed=2, spread=0.0)
    cfg = CFG.replace(tau_seconds=100.0)
    eng = Engine(cfg)
    r = eng.process(x, ["a", "b"], np.array([0.0, 1000.0]))
    assert r.new_cluster.tolist() == [True, True]  # exp(-10) * 1.0 is below the threshold
    eng2 = Engine(cfg)
    r2 = eng2.process(x, ["a", "b"], np.array([0.0, 1.0]))
    assert r2.new_cluster.tolist() == [True, False]
    assert math.isclose(r2.similarity[1], math.exp(-0.01), rel_tol=1e-6)


def test_size_warning_counted():
    x, _ = blobs(80, 8, 1, seed=4, spread=0.05)
    eng = Engine(CFG.replace(size_warning=50))
    eng.process(x, [f"i{i}" for i in range(80)], np.arange(80.0))
    s = next(iter(eng.scopes.values()))
    assert s.size_warnings == 1


def test_promotion_emits_created_once(small_stream):
    x, _ = small_stream
    _, _, changes = run(x, 100)
    created = [
        c.split('"cluster_id":"')[1].split('"')[0] for c in changes if '"kind":"created"' in c
    ]
    assert len(created) == len(set(created)) > 0


def test_active_status_reported():
    x, _ = blobs(10, 8, 1, seed=9, spread=0.01)
    eng = Engine(CFG)
    r = eng.process(x, [f"i{i}" for i in range(10)], np.arange(10.0))
    assert r.status[0] != ACTIVE and r.status[-1] == ACTIVE


def test_process_events_reports_bad_vectors_and_keeps_good_ones():
    from schemas.inputs import VectorEvent

    def ev(i: str, vec: list[float], model: str = "m") -> VectorEvent:
        return VectorEvent(
            item_id=i, embedding_type="event", embedding_model=model, event_time=0.0, vector=vec
        )

    eng = Engine(CFG)
    res, bad = eng.process_events(
        [ev("a", [1.0, 0.0]), ev("b", [0.0, 0.0]), ev("c", [1.0, 0.0, 0.0]), ev("d", [0.9, 0.1])]
    )
    assert [i for i, _ in bad] == [1, 2]
    assert [e.reason for _, e in bad] == ["zero_vector", "dimension_mismatch"]
    assert res.item_ids == ["a", "d"] and res.cluster_id(0) == res.cluster_id(1)


def test_membership_log_replays_to_the_live_memberships(small_stream):
    """Adapters persist memberships from the drained log; folding every drain must give
    exactly the engine's memberships, through merges, retirements and deletions."""
    x, _ = small_stream
    eng = Engine(CFG.replace(retire_weight=0.5, half_life_seconds=40.0))
    seen: dict[str, str] = {}
    t = np.arange(len(x), dtype=float)
    for pos in range(0, len(x), 37):
        eng.process(x[pos : pos + 37], [f"i{i}" for i in range(pos, pos + 37)], t[pos : pos + 37])
        if pos == 185:
            eng.delete("i3")
        for st_ in eng.scopes.values():
            for item, no in st_.drain_moves().items():
                if no < 0:
                    seen.pop(item, None)
                else:
                    seen[item] = st_.cluster_name(no)
    live = {
        item: st_.cluster_id(slot)
        for st_ in eng.scopes.values()
        for item, slot in st_.item_slot.items()
    }
    assert seen == live
    assert "i3" not in seen
    assert len(live) < len(x)  # some clusters retired on the way


def test_engine_pickled_mid_stream_continues_identically(small_stream):
    """Workers checkpoint the engine and replay from there; the result must not change."""
    import pickle

    x, _ = small_stream
    ids = [f"i{i}" for i in range(len(x))]
    t = np.arange(len(x), dtype=float)
    whole = Engine(CFG)
    a = whole.process(x, ids, t).assignments()
    first = Engine(CFG)
    b = first.process(x[:150], ids[:150], t[:150]).assignments()
    resumed = pickle.loads(pickle.dumps(first))
    b += resumed.process(x[150:], ids[150:], t[150:]).assignments()
    assert [m.model_dump_json() for m in a] == [m.model_dump_json() for m in b]
    assert snapshot_bytes(whole) == snapshot_bytes(resumed)


def test_checkpoint_from_before_event_time_ticks_still_loads(small_stream):
    """A scope pickled by a version without `last_tick_time` loads and keeps clustering."""
    import pickle

    x, _ = small_stream
    ids = [f"i{i}" for i in range(len(x))]
    t = np.arange(len(x), dtype=float)
    eng = Engine(CFG)
    eng.process(x[:100], ids[:100], t[:100])
    st = next(iter(eng.scopes.values()))
    del st.__dict__["last_tick_time"]  # what an older checkpoint holds
    old = pickle.loads(pickle.dumps(eng))
    assert next(iter(old.scopes.values())).last_tick_time is None
    res = old.process(x[100:], ids[100:], t[100:])
    assert len(res.assignments()) == len(x) - 100


def test_event_ids_are_standard_uuid5() -> None:
    import uuid

    from processors.scope import _EVENT_NS, uuid5_str

    for name in ("a", "document/m|1|created|document-1a2b3c4d-000001", "é|∑"):
        assert uuid5_str(name) == str(uuid.uuid5(_EVENT_NS, name))


def test_numpy_search_backend_finds_the_same_neighbours() -> None:
    from processors.search import knn_inner_product

    x, _ = blobs(300, 24, 6, seed=2)
    q, base = x[:50], x[50:]
    d1, i1 = knn_inner_product(q, base, 5, backend="faiss")
    d2, i2 = knn_inner_product(q, base, 5, backend="numpy")
    assert np.array_equal(i1, i2)
    assert np.allclose(d1, d2, atol=1e-5)
    d3, i3 = knn_inner_product(q, base[:3], 5, backend="numpy")  # k clipped to the base
    assert i3.shape == (50, 3) and (np.diff(d3, axis=1) <= 0).all()


def test_numpy_backend_engine_matches_faiss_backend(small_stream):
    x, _ = small_stream
    _, a1, c1 = run(x, 64)
    _, a2, c2 = run(x, 64, CFG.replace(search_backend="numpy"))
    assert a1 == a2 and c1 == c2


def test_warm_up_loads_the_compiled_kernel() -> None:
    """The service calls it at start so its first batch does not pay the kernel's load. In a
    fresh interpreter: nothing is loaded before, the kernel is after."""
    import subprocess
    import sys

    code = (
        "from processors.kernels import assign_segment\n"
        "assert not assign_segment.signatures\n"
        "from processors.engine import warm_up\n"
        "warm_up()\n"
        "assert assign_segment.signatures\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
