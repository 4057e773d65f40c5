"""What is running: the package version (from the installed distribution's metadata, the one
place it is written: pyproject.toml) and which faiss build provides `import faiss`."""

from __future__ import annotations

from importlib import metadata

DIST = "stage4-clusterer"
FAISS_DISTS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12")


def version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def faiss_distributions() -> dict[str, str]:
    """Installed distributions that ship the `faiss` package, name -> version. More than one
    means they overwrote each other's files: removing either breaks `import faiss`."""
    found: dict[str, str] = {}
    for name in FAISS_DISTS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def describe() -> str:
    """`clusterer --version`: the package and its faiss build."""
    dists = faiss_distributions()
    faiss = ", ".join(f"{k} {v}" for k, v in dists.items()) or "faiss not installed"
    return f"clusterer {version()} ({faiss})"
