#!/usr/bin/env bash
# The prepared run for a lent GPU machine (one NVIDIA GPU, Python 3.12, torch and transformers; no keras,
# keras-hub or TensorFlow there). Each measurement has its own time limit and writes under $OUT as it goes.
#
# On the development machine first (benchmarks/README.md, "Refreshing the GPU figures"):
#   printf '/.whl/\n/.bench/\n' >> .git/info/exclude
#   mkdir -p .bench && cp ../shared/bench/hf_anchor.py .bench/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 keras-hub==0.32.0 namex optree kagglehub kagglesdk==0.1.28 pytorch-metric-learning
# then, on the GPU machine, with `.whl` and `.bench` carried: bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=torch PYTHONUNBUFFERED=1  # rows reach $OUT even if a limit stops a section

section() {  # name, seconds, command...
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s)"
    local start=$SECONDS
    timeout "$seconds" "$@" > "$OUT/$name.txt" 2>&1
    echo "rc=$? in $((SECONDS - start))s" | tee -a "$OUT/$name.txt"
    grep -E '^\||whole run' "$OUT/$name.txt"
}

# Most important first; the limits add up to under 7 minutes, so that a lent machine's 15 minutes leave room for
# its start and a rerun.
section machine 15 bash -c 'nvidia-smi; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"'
section gpu_fit 240 python3 benchmarks/gpu_fit.py --anchor .bench/hf_anchor.py --output "$OUT/gpu_fit.json"
section count_syncs 45 python3 benchmarks/count_syncs.py
section loss_vs_peers 45 python3 benchmarks/loss_vs_peers.py --device cuda --batch-sizes 64 1024 16384 --dims 1024
section gpu_fit_compiled 75 python3 benchmarks/gpu_fit.py --anchor .bench/hf_anchor.py --sizes roberta_large \
    --batch-sizes 64 --variants fast_keras_blocks fast_compiled --anchor-modes --output "$OUT/gpu_fit_compiled.json"
