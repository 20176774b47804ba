#!/usr/bin/env bash
# Creates .venv with the locked dependencies (dev tools included) and the data folders.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_uv.sh
$UV sync --locked --extra dev --quiet
mkdir -p data/logs data/cache data/sessions
[ -f .env ] || cp .env.example .env
echo "Ready: .venv/bin/agent-template --help"
