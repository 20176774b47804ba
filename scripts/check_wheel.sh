#!/usr/bin/env bash
# Builds the sdist and the wheel, installs the wheel with plain pip (no uv, no extras) into a
# new virtual environment, and runs the three commands from there as a user would: offline, in
# an empty folder, with no provider key in the environment. Ends with a PASS or FAIL line.
# pip downloads the dependencies from the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_START_TIMEOUT_S=90 # a first start compiles bytecode and creates the database

work="$(mktemp -d "${TMPDIR:-/tmp}/check-wheel.XXXXXX")"
server_pid=""
current="setting up"

finish() {
  local status=$?
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$status" -eq 0 ]; then
    echo "check_wheel: PASS (the wheel installs with pip and its commands run offline)"
  else
    echo "check_wheel: FAIL while ${current} (files kept in ${work})" >&2
  fi
  if [ "$status" -eq 0 ] && [ -z "${KEEP_CHECK_WHEEL:-}" ]; then
    rm -rf "$work"
  fi
}
trap finish EXIT

step() {
  current="$1"
  echo "check_wheel: ${current}"
}

fail() {
  echo "check_wheel: ${current}: $1" >&2
  exit 1
}

# The clean environment the installed commands run in: no provider keys, no settings of ours,
# a home of their own (so no client.toml or pip configuration of the developer is read).
mkdir -p "$work/home" "$work/tmp" "$work/run"
run_clean() {
  (cd "$work/run" && env -i HOME="$work/home" TMPDIR="$work/tmp" LANG=C.UTF-8 \
    PATH="$work/venv/bin:/usr/local/bin:/usr/bin:/bin" "$@")
}

# Runs a command in the clean environment; fails unless it succeeds and prints the text.
expect_output() {
  local text="$1" output
  shift
  output="$(run_clean "$@" 2>&1)" || fail "exit status $?: $output"
  grep -qF -- "$text" <<<"$output" || fail "'$text' is not in the output: $output"
}

step "building the sdist and the wheel"
source scripts/_uv.sh
$UV build --quiet --out-dir "$work/dist"
wheel="$(ls "$work"/dist/agent_template-*.whl)"
sdist="$(ls "$work"/dist/agent_template-*.tar.gz)"
echo "  $(basename "$wheel"), $(basename "$sdist")"

step "checking what the wheel contains"
listing="$("$PYTHON" -m zipfile -l "$wheel")"
for member in agent_template/py.typed agent_template/env.example agent_template/frontend/app.tcss \
  agent_template/services/storage/migrations/env.py; do
  grep -qF "$member" <<<"$listing" || fail "$member is missing from the wheel"
done
grep -qE 'dist-info/licenses/LICENSE' <<<"$listing" || fail "LICENSE is missing from the wheel"
sdist_listing="$(tar tzf "$sdist")"
for member in src/agent_template/py.typed LICENSE README.md; do
  grep -qF "$member" <<<"$sdist_listing" || fail "$member is missing from the sdist"
done

step "installing the wheel with pip into a new virtual environment"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --disable-pip-version-check "$wheel" >"$work/pip.log" 2>&1 \
  || fail "pip could not install $(basename "$wheel"): $(tail -n 30 "$work/pip.log")"

step "agent-template --help"
expect_output "Usage: agent-template" agent-template --help

step "agent-template init (the packaged env.example)"
run_clean agent-template init >/dev/null
grep -q "DEFAULT_MODEL_PROVIDER" "$work/run/.env" || fail ".env was not written from the template"
rm "$work/run/.env"

step "agent-template run \"hi\" with no provider key"
expect_output "[offline test model] You said: 'hi'" agent-template run "hi"

step "agent-server --help"
expect_output "usage: agent-server" agent-server --help

step "agent-client --help"
expect_output "usage: agent-client" agent-client --help

step "a missing otel extra is named when tracing is asked for"
if run_clean python -c "import opentelemetry.sdk" 2>/dev/null; then
  echo "  skipped: opentelemetry-sdk came with the dependencies"
else
  port="$(run_clean python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  run_clean env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
    agent-server --port "$port" >"$work/server.log" 2>&1 &
  server_pid=$!
  # /health answers once the application's start-up (where tracing is set up) is complete.
  run_clean python - "$port" "$SERVER_START_TIMEOUT_S" <<'PY' || fail "the server did not start: $(cat "$work/server.log")"
import sys
import time
import urllib.request

port, timeout = int(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.2)
PY
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
  grep -qF "pip install 'agent-template[otel]'" "$work/server.log" \
    || fail "the server did not name the otel extra: $(cat "$work/server.log")"
fi
