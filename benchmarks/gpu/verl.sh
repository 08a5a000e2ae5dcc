#!/usr/bin/env bash
# The verl plug-in's GPU check, from the repository root on a CUDA machine without network:
#   bash benchmarks/gpu/verl.sh [OUT_DIR]           (default benchmarks/results/gpu)
# verl and what its engine imports travel as wheels in .whl-verl/ (py3.12), ray as
# .whl-verl/ray-import-only.zip: ray's wheel (79 MB) minus its Java jar, cluster binaries and
# dashboard, which a one-process engine never starts (`import ray` only); it is unpacked, not
# pip-installed. Wheels: verl 0.9.1, transformers 5.10.4 (verl pins < 5.11), tensordict,
# omegaconf, antlr4, codetiming, torchdata, TransferQueue, pyzmq, msgspec, orjson, jsonschema (+
# its parts), trio, outcome, pyvers, wcwidth, datasets, dill, multiprocess.
set -uo pipefail
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
site=/tmp/site-verl
timeout 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .whl-verl/*.whl || { echo "wheel install failed"; exit 1; }
(cd "$site" && unzip -q -o "$OLDPWD/.whl-verl/ray-import-only.zip")
export PYTHONPATH="src:$site"
python3 - <<'PY'
# the plug-in's entry point, as pip would declare it for an installed package
import pathlib, sys
site = pathlib.Path("/tmp/site-verl")
info = site / "entropy_dynamics-0.0.0.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text("Metadata-Version: 2.1\nName: entropy-dynamics\nVersion: 0.0.0\n")
(info / "entry_points.txt").write_text(
    "[verl.plugins]\nentropy_dynamics = entropy_dynamics.integrations.verl\n")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 420 python3 -W ignore benchmarks/gpu/verl_check.py --out "$out/verl_check.json" 2>&1 \
    | grep -v "Loading weights\|fx_tracing" | tail -40
