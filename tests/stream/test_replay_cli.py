from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from schemas.outputs import Assignment, ClusterResult
from stream.cli import main
from tests.conftest import ROOT, blobs


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    x, _ = blobs(300, 16, 3, seed=11, spread=0.1)
    p = {
        "vectors": tmp_path / "x.npy",
        "ids": tmp_path / "ids.txt",
        "ts": tmp_path / "t.npy",
        "meta": tmp_path / "m.jsonl",
    }
    np.save(p["vectors"], x)
    p["ids"].write_text("\n".join(f"item-{i}" for i in range(300)) + "\n")
    np.save(p["ts"], np.arange(300, dtype=np.float64) * 60)
    p["meta"].write_text(
        "".join(json.dumps({"title": f"story {i % 3} words"}) + "\n" for i in range(300))
    )
    return p


def test_replay_writes_all_outputs(files, tmp_path):
    out = {k: tmp_path / k for k in ("a.jsonl", "l.npy", "c.jsonl")}
    code = main(
        [
            "replay",
            "--vectors",
            str(files["vectors"]),
            "--ids",
            str(files["ids"]),
            "--timestamps",
            str(files["ts"]),
            "--metadata",
            str(files["meta"]),
            "--assignments-out",
            str(out["a.jsonl"]),
            "--labels-out",
            str(out["l.npy"]),
            "--clusters-out",
            str(out["c.jsonl"]),
            "--quiet",
        ]
    )
    assert code == 0
    lines = out["a.jsonl"].read_text().splitlines()
    assert [Assignment.model_validate_json(s).item_id for s in lines] == [
        f"item-{i}" for i in range(300)
    ]
    labels = np.load(out["l.npy"])
    assert labels.dtype == np.int64 and labels.shape == (300,)
    clusters = [
        ClusterResult.model_validate_json(s) for s in out["c.jsonl"].read_text().splitlines()
    ]
    assert len(clusters) == 3 == len(set(labels[labels >= 0].tolist()))
    # labels agree with the final cluster membership
    members = {m: c.cluster_id for c in clusters for m in c.member_ids}
    by_label: dict[int, set[str]] = {}
    for i, lab in enumerate(labels):
        if lab >= 0:
            by_label.setdefault(int(lab), set()).add(members[f"item-{i}"])
    assert all(len(v) == 1 for v in by_label.values())
    assert all(c.cluster_label.startswith("story") or "story" in c.cluster_label for c in clusters)


def bad(tmp_path: Path, name: str, content: bytes | np.ndarray) -> Path:
    p = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(p, content)
    else:
        p.write_bytes(content)
    return p


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing", "not found"),
        ("garbage", "not a readable .npy"),
        ("one_d", "expected a non-empty 2-d array"),
        ("nan_rows", "NaN"),
        ("ints", "expected float rows"),
        ("ts_len", "timestamps file"),
        ("ts_nan", "non-finite"),
        ("ids_len", "ids file"),
        ("ids_dup", "repeats an id"),
        ("meta_len", "metadata file"),
        ("meta_json", "is not JSON"),
        ("cfg_toml", "not valid TOML"),
        ("cfg_key", "unknown engine settings"),
        ("cfg_value", "assign_threshold"),
    ],
)
def test_bad_files_one_line_exit_2(case, expect, files, tmp_path, capsys):
    args = {"--vectors": str(files["vectors"])}
    x = np.load(files["vectors"])
    if case == "missing":
        args["--vectors"] = str(tmp_path / "nope.npy")
    elif case == "garbage":
        args["--vectors"] = str(bad(tmp_path, "g.npy", b"\x00garbage"))
    elif case == "one_d":
        args["--vectors"] = str(bad(tmp_path, "o.npy", np.ones(5, np.float32)))
    elif case == "nan_rows":
        y = x.copy()
        y[3, 0] = np.nan
        args["--vectors"] = str(bad(tmp_path, "n.npy", y))
    elif case == "ints":
        args["--vectors"] = str(bad(tmp_path, "i.npy", np.ones((3, 4), np.int64)))
    elif case == "ts_len":
        args["--timestamps"] = str(bad(tmp_path, "t.npy", np.arange(5.0)))
    elif case == "ts_nan":
        t = np.arange(300.0)
        t[2] = np.nan
        args["--timestamps"] = str(bad(tmp_path, "t.npy", t))
    elif case == "ids_len":
        args["--ids"] = str(bad(tmp_path, "ids.txt", b"a\nb\n"))
    elif case == "ids_dup":
        args["--ids"] = str(bad(tmp_path, "ids.txt", ("\n".join(["a"] * 300) + "\n").encode()))
    elif case == "meta_len":
        args["--metadata"] = str(bad(tmp_path, "m.jsonl", b"{}\n"))
    elif case == "meta_json":
        args["--metadata"] = str(bad(tmp_path, "m.jsonl", b"{\n" * 300))
    elif case == "cfg_toml":
        args["--config"] = str(bad(tmp_path, "c.toml", b"[engine\n"))
    elif case == "cfg_key":
        args["--config"] = str(bad(tmp_path, "c.toml", b"[engine]\nassign_treshold = 0.5\n"))
    elif case == "cfg_value":
        args["--config"] = str(bad(tmp_path, "c.toml", b"[engine]\nassign_threshold = 2.0\n"))
    argv = ["replay"] + [v for kv in args.items() for v in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and "Traceback" not in err[0]


def test_console_script_runs_without_traceback(tmp_path):
    exe = Path(sys.executable).parent / "clusterer"
    r = subprocess.run(
        [str(exe), "replay", "--vectors", str(tmp_path / "none.npy")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_config_file_changes_the_engine(files, tmp_path):
    cfg = bad(
        tmp_path,
        "c.toml",
        b"[engine]\nassign_threshold = 0.99\nmerge_threshold = 0.99\nmin_weight = 2.0\n",
    )
    out = tmp_path / "l.npy"
    assert (
        main(
            [
                "replay",
                "--vectors",
                str(files["vectors"]),
                "--config",
                str(cfg),
                "--labels-out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    strict = np.load(out)
    assert (
        main(["replay", "--vectors", str(files["vectors"]), "--labels-out", str(out), "--quiet"])
        == 0
    )
    default = np.load(out)
    assert (strict < 0).sum() > (default < 0).sum()


@pytest.fixture
def open_tail(files: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The 300 items of `files`, then four at the last timestamp in two directions the
    topics do not use (cosine 0.45 between them: two candidates that average-link merges
    into a real cluster at the next maintenance, which a live service has not reached)."""
    x = np.load(files["vectors"])
    u = np.linalg.svd(x.astype(np.float64), full_matrices=True)[2]
    a, c = u[-1], u[-2]
    b = 0.45 * a + np.sqrt(1 - 0.45**2) * c
    xx = np.vstack([x, np.array([a, a, b, b])]).astype(np.float32)
    t = np.concatenate([np.arange(300) * 60.0, np.full(4, 299 * 60.0)])
    p = {"vectors": tmp_path / "xt.npy", "ts": tmp_path / "tt.npy"}
    np.save(p["vectors"], xx)
    np.save(p["ts"], t)
    return p


def _replay_labels(p: dict[str, Path], out: Path, *extra: str) -> np.ndarray:
    argv = ["replay", "--vectors", str(p["vectors"]), "--timestamps", str(p["ts"])]
    assert main([*argv, "--labels-out", str(out), "--quiet", *extra]) == 0
    return np.load(out)


def test_replay_closes_the_stream_unless_as_live(open_tail, tmp_path):
    closed = _replay_labels(open_tail, tmp_path / "closed.npy")
    live = _replay_labels(open_tail, tmp_path / "live.npy", "--as-live")
    assert np.array_equal(closed[:300], live[:300])
    # the final maintenance pass merged the two candidates into a real cluster ...
    assert closed[-1] >= 0 and len(set(closed[-4:].tolist())) == 1
    # ... which a live service has not done yet: its last items are still in candidates
    assert (live[-4:] == -1).all()


def test_as_live_replay_is_what_a_live_engine_holds(open_tail, tmp_path):
    """`--as-live` labels group items exactly as the active clusters of an engine that has
    consumed the same items (and never reached the end of its input)."""
    from processors import Batch, Engine, EngineConfig, ScopeKey

    live = _replay_labels(open_tail, tmp_path / "live.npy", "--as-live")
    x, t = np.load(open_tail["vectors"]), np.load(open_tail["ts"])
    eng = Engine(EngineConfig())
    ids = [str(i) for i in range(len(x))]
    eng.learn(Batch(x, ids, t, scopes=[ScopeKey("document", "replay")] * len(x)))
    engine_groups = sorted(sorted(int(m) for m in c.member_ids) for c in eng.results())
    replay_groups = sorted(
        sorted(np.flatnonzero(live == lab).tolist()) for lab in set(live.tolist()) - {-1}
    )
    assert engine_groups == replay_groups


def test_size_warnings_are_one_line_and_quiet_is_quiet(files):
    """Three clusters of ~100 members pass the size warning (50): one summary line, not
    one per cluster; --quiet prints nothing at all. In a fresh process, as a user runs it
    (logging is configured once per process)."""

    def replay(*extra: str) -> list[str]:
        argv = [sys.executable, "-m", "stream.cli", "replay", "--vectors", str(files["vectors"])]
        r = subprocess.run(
            [*argv, *extra], capture_output=True, text=True, check=True, timeout=120, cwd=ROOT
        )
        return r.stderr.strip().splitlines()

    assert replay("--quiet") == []
    err = replay()
    warned = [line for line in err if "passed 50 members" in line]
    assert warned == ["clusterer replay: 3 cluster(s) passed 50 members (size_warning)"]
    assert len(err) == 2  # the warning and the summary
    assert json.loads(err[-1])["scopes"]["document/replay"]["size_warnings"] == 3


def test_log_level_is_checked_without_a_traceback(files, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--log-level", "bogus", "replay", "--vectors", str(files["vectors"])])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--log-level" in err and "Traceback" not in err
    assert (
        main(["--log-level", "info", "replay", "--vectors", str(files["vectors"]), "--quiet"]) == 0
    )
