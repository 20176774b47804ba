#!/usr/bin/env bash
# Sets up (if needed) and runs the test suite. Extra arguments go to pytest, except a bare
# --cov, which measures coverage of the package (floor and settings in pyproject.toml) and
# writes the report to the terminal and to htmlcov/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
args=()
for arg in "$@"; do
  if [ "$arg" = "--cov" ]; then
    args+=(--cov=agent_template --cov-report=term --cov-report=html)
  else
    args+=("$arg")
  fi
done
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
