#!/usr/bin/env bash
# NFNet-F0 and eca_nfnet_l0 on one GPU: training throughput at the largest batch that fits and
# inference throughput at batch 256, Keras (mixed_bfloat16 with XLA) against timm (AMP bf16,
# channels_last, torch.compile where it works). Writes bench/results_gpu_<device>.json and
# prints the README row (bench/bench_gpu.py has the details).
#
#   bench/gpu.sh                 # on the GPU machine, from anywhere
#   bench/gpu.sh --dry-run       # on any CPU: tiny sizes, proves the plumbing (minutes: JAX compiles)
#   bench/gpu.sh --no-compile    # a rerun without torch.compile, if it costs too much time
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3). A machine
# without Keras or keras_nfnet's other requirements takes them as wheels from .whl/ in the
# repository root (installed with pip --no-index into /tmp/site); fetch them where pip can reach
# PyPI, for the GPU machine's Python (3.12 there), e.g.:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import keras" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "gpu.sh: $PYTHON has no keras and .whl/ holds no wheels (see the header)." >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
if [[ " $* " == *" --dry-run "* || " $* " == *" --json "* ]]; then
    exec "$PYTHON" bench/bench_gpu.py --markdown "$@"
fi
device=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" \
    | tr 'A-Z ' 'a-z_' | tr -cd 'a-z0-9_')
exec "$PYTHON" bench/bench_gpu.py --markdown --json "bench/results_gpu_${device}.json" "$@"
