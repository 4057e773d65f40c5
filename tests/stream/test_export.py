"""`clusterer export`: bad arguments (one line, exit 2) and, against the real PostgreSQL,
rows written by the worker's commit path read back as the day's ClusterResult JSONL."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--embedding-type", "paragraph", "--date", "2025-12-15"], "--embedding-type"),
        (["--embedding-type", "event", "--date", "15/12/2025"], "--date"),
        (["--embedding-type", "event"], "required"),
        (
            ["--embedding-type", "event", "--date", "2025-12-15", "--out", "/nonexistent/x.jsonl"],
            "--out",
        ),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and err.startswith("clusterer export:")
