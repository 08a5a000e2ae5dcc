#!/usr/bin/env bash
# The engine plug-ins' test suites, each in its own virtual environment under .venvs/ (gitignored):
# engines pin conflicting versions (verl imports a TRL class that TRL >= 1.13 no longer has), so
# they never share one. Each venv sees the main environment's packages (--system-site-packages:
# torch is not downloaded again), installs the package with the engine's extra on top, and runs
# tests/integrations/test_<engine>_*.py. A suite that skips any test fails: in its own
# environment every engine test must run. An existing .venvs/<engine> is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

run_suite() {  # run_suite ENGINE [EXTRA PIP ARGS...]
    local engine=$1
    shift
    local venv=".venvs/$engine"
    [ -x "$venv/bin/python" ] || python -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet -e ".[$engine]" "$@"
    local log
    log=$(mktemp)
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs tests/integrations/test_"$engine"_*.py \
        2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || exit "$status"
    if tail -n 1 "$log" | grep -q "skipped"; then
        echo "test-engines: $engine tests were skipped in the $engine environment (see above)" >&2
        exit 1
    fi
}

run_suite trl peft  # peft: the PEFT (LoRA) test
run_suite verl      # verl pins transformers < 5.11 and imports a class TRL >= 1.13 removed
