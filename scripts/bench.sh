#!/usr/bin/env bash
# Sets up (if needed) and prints every benchmark figure, one JSON object per line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python benchmarks/overhead.py
.venv/bin/python benchmarks/storage.py
.venv/bin/python benchmarks/cache_latency.py
.venv/bin/python benchmarks/soak.py
.venv/bin/python benchmarks/startup.py
.venv/bin/python benchmarks/http_load.py
.venv/bin/python benchmarks/ws_load.py
