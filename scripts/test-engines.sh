#!/usr/bin/env bash
# The engine plug-ins' test suites, each in its own virtual environment under .venvs/ (gitignored):
# engines pin conflicting versions (verl imports a TRL class that TRL >= 1.13 no longer has), so
# they never share one. Each venv is isolated from the calling environment's packages (a package
# there, such as transformers' `kernels` at a version the engine's transformers cannot import,
# must not leak in) but gets the calling environment's own torch, the same version and build
# (pinned by a constraint, so no engine can swap it), installs the package with the engine's extra
# on top, and runs tests/integrations/test_<engine>_*.py. A suite that skips any test fails: in its
# own environment every engine test must run. An existing venv of this layout is reused; one made
# by an older version of this script (which saw the caller's packages) is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python}
torch_version=$("$python" -c "import torch; print(torch.__version__)")
export ENTROPY_DYNAMICS_MAIN_TORCH=$torch_version  # tests/integrations/test_*_environment.py
constraints=$(mktemp)
echo "torch==$torch_version" > "$constraints"

install_torch() {  # install_torch VENV: the caller's torch version and build into VENV
    local venv=$1
    "$venv/bin/python" -m pip install --quiet "torch==$torch_version" && return 0
    local label=${torch_version#*+}  # 2.13.0+cu130 -> cu130: PyTorch's index for that build
    [ "$label" != "$torch_version" ] || return 1
    "$venv/bin/python" -m pip install --quiet "torch==$torch_version" \
        --extra-index-url "https://download.pytorch.org/whl/$label"
}

run_suite() {  # run_suite ENGINE [EXTRA PIP ARGS...]
    local engine=$1
    shift
    local venv=".venvs/$engine"
    if [ -f "$venv/pyvenv.cfg" ] && grep -q "include-system-site-packages = true" "$venv/pyvenv.cfg"
    then
        echo "test-engines: rebuilding $venv (it saw the calling environment's packages)" >&2
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
        install_torch "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet -c "$constraints" -e ".[$engine,test]" "$@"
    local inside
    inside=$("$venv/bin/python" -c "import torch; print(torch.__version__)")
    if [ "$inside" != "$torch_version" ]; then
        echo "test-engines: $venv has torch $inside, the calling environment $torch_version" >&2
        exit 1
    fi
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
