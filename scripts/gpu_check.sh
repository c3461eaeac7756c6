#!/usr/bin/env bash
# rmseg's CUDA path in one call of at most 8 minutes (docs/gpu.md). From the repository root, with OUT set:
#   OUT=/tmp/gpu scripts/gpu_check.sh                       # on the GPU machine, the bundle carried (make gpu-bundle)
#   OUT=/tmp/gpu scripts/gpu_check.sh --device cpu --tiny   # dry run of every step (tests/test_gpu_check.py)
# Installs the bundle's wheels (RMSEG_GPU_BUNDLE, default build/gpu) into a temporary folder on PYTHONPATH,
# then runs python -m benchmarks.gpu.check with the arguments given (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the reports}"
bundle=${RMSEG_GPU_BUNDLE:-build/gpu}
python=${PYTHON:-python3}
site=$(mktemp -d "${TMPDIR:-/tmp}/rmseg-gpu-site.XXXXXX")
trap 'rm -rf "$site"' EXIT
shopt -s nullglob
wheels=("$bundle"/wheels/*.whl)
if ((${#wheels[@]})); then
    start=$SECONDS
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$site" "${wheels[@]}"
    echo "[gpu_check] installed ${#wheels[@]} wheels of $bundle in $((SECONDS - start)) s"
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "[gpu_check] no wheels in $bundle/wheels: using the installed packages (build the bundle with 'make gpu-bundle')"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$python" - <<'PY' || exit 2
import sys
from importlib.util import find_spec
missing = [m for m in ("monai", "hydra", "omegaconf", "nibabel", "edt") if find_spec(m) is None]
if missing:
    sys.exit(f"[gpu_check] {', '.join(missing)} missing: build the bundle with 'make gpu-bundle' and carry build/gpu")
PY
exec "$python" -m benchmarks.gpu.check --bundle "$bundle" "$@"
