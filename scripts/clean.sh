#!/usr/bin/env bash
# Removes caches and build output. Keeps .venv, .env and data/ unless --all is given.
set -euo pipefail
cd "$(dirname "$0")/.."
find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
rm -rf .pytest_cache .mypy_cache .ruff_cache build dist htmlcov .coverage .cache
if [ "${1:-}" = "--all" ]; then
  rm -rf .venv data
fi
