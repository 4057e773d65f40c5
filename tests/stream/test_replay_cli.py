from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from schemas.outputs import Assignment, ClusterResult
from stream.cli import main
from tests.conftest import blobs


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
