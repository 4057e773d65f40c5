#!/usr/bin/env bash
# The whole test suite, lint and type checks, on a fresh machine or a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh
dev/check_deploy.sh   # helm chart, compose file, alert rules, AsyncAPI (installs its tools once)
.venv/bin/ruff check .
.venv/bin/mypy .
.venv/bin/python -m pytest -p no:cacheprovider "$@"
