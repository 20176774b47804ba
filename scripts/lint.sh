#!/usr/bin/env bash
# Formats and lints the code, then type-checks it. With --check, changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
if [ "${1:-}" = "--check" ]; then
  .venv/bin/ruff format --check .
  .venv/bin/ruff check .
else
  .venv/bin/ruff format .
  .venv/bin/ruff check --fix .
fi
.venv/bin/mypy src
