# Sourced by the other scripts: finds uv, installing it with pip when it is missing, and sets $UV.
# Works on a machine that has only Python 3.11+ and pip.
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
if [ -z "$PYTHON" ]; then
  echo "Python 3.11+ is required but neither python3 nor python is on PATH." >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Python 3.11+ is required; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  exit 1
fi
if command -v uv >/dev/null 2>&1; then
  UV="uv"
elif "$PYTHON" -m uv --version >/dev/null 2>&1; then
  UV="$PYTHON -m uv"
else
  echo "uv not found; installing it with pip..." >&2
  if "$PYTHON" -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1 \
    || "$PYTHON" -m pip install --quiet --disable-pip-version-check --user uv >/dev/null 2>&1; then
    UV="$PYTHON -m uv"
  else
    # An externally managed Python refuses pip installs: keep uv in a private venv instead.
    boot="$(pwd)/.cache/uv-bootstrap"
    "$PYTHON" -m venv "$boot" && "$boot/bin/pip" install --quiet uv
    UV="$boot/bin/uv"
  fi
fi
# The interpreter itself, not a launcher in front of it (a pyenv shim, say): uv compares this
# path with the one .venv was made from, and replaces .venv when they differ.
UV_PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')"
export UV_PYTHON
