#!/usr/bin/env bash
# Builds the documentation site into site/ (strict: any warning fails), or serves it.
# Usage: scripts/docs.sh [serve] [mkdocs options...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's banner about its successor
if [ "${1:-}" = "serve" ]; then
  shift
  exec .venv/bin/mkdocs serve "$@"
fi
exec .venv/bin/mkdocs build --strict "$@"
