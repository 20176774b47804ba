#!/usr/bin/env bash
# Creates .venv with the locked dependencies (dev tools included) and the data folders.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_uv.sh
# Bytecode compiled now, not on first import: start-up is fast from the first run, also where
# PYTHONDONTWRITEBYTECODE keeps Python from caching it.
$UV sync --locked --extra dev --quiet --compile-bytecode
.venv/bin/python -m compileall -q src >/dev/null
mkdir -p data/logs data/cache data/sessions
[ -f .env ] || cp .env.example .env
echo "Ready: .venv/bin/agent-template --help"
