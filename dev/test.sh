#!/usr/bin/env bash
# The whole test suite, lint and type checks, on a fresh machine or a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy .
.venv/bin/python -m pytest -p no:cacheprovider "$@"
