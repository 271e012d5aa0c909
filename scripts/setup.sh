#!/usr/bin/env bash
# Set up edgekd on a fresh Debian machine: system packages, a venv in .venv, pinned dependencies.
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "edgekd: espeak-ng is missing; install it with: sudo apt-get install espeak-ng" >&2
    exit 1
  fi
fi

# Debian chromium: only the report.html browser test needs it (skipped, with a reason, where it is absent).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: any other route lets pip pick a CUDA build of several GB.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
echo "edgekd: environment ready in .venv (activate with: source .venv/bin/activate)"
