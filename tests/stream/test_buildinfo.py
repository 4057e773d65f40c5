"""What is installed: the faiss build, and a clear message when none is."""

from __future__ import annotations

import subprocess
import sys

from stream.buildinfo import describe, faiss_distributions
from tests.conftest import ROOT


def test_exactly_one_faiss_build_is_installed_here() -> None:
    """The project installs faiss from exactly one of the extras cpu or gpu."""
    dists = faiss_distributions()
    assert len(dists) == 1, dists
    assert next(iter(dists)) in describe()


def test_without_faiss_a_command_says_which_extra_to_install(tmp_path) -> None:
    """`pip install .` without an extra leaves faiss out: one line, exit code 2."""
    code = (
        "import sys; sys.modules['faiss'] = None\n"
        "from stream.cli import main\n"
        f"sys.exit(main(['replay', '--vectors', {str(tmp_path / 'x.npy')!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "clusterer replay: faiss is not installed; install the project with exactly one of the"
        " extras [cpu] or [gpu] (README: GPU)"
    ]
