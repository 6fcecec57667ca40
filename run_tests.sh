#!/usr/bin/env bash
# The test command: sets up the environment on a fresh machine, then runs the whole suite.
#   bash run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
venv="$(bash scripts/setup_env.sh)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout first, whatever the venv points to
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "run_tests.sh: pytest collected no tests" >&2
fi
exit "$status"
