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

# Most important first; the limits add up to about 6 minutes, so that a lent machine's 15 minutes leave room for
# its start and a rerun. The compiled runs (`--variants fast_compiled --anchor-modes eager compiled`, about 3 minutes
# for RoBERTa-large b64) are a separate call.
section machine 15 bash -c 'nvidia-smi; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"'
# The fast step, and the fast step with Keras' optimizer update or Keras' metric updates in place of
# the hand-written ones (does each earn its place?), beside the eager anchor.
section gpu_fit 270 python3 benchmarks/gpu_fit.py --anchor .bench/hf_anchor.py --anchor-modes eager \
    --variants fast fast_keras_adam fast_keras_metrics --output "$OUT/gpu_fit.json"
section count_syncs 45 python3 benchmarks/count_syncs.py
section profile_step 60 python3 benchmarks/profile_step.py --anchor .bench/hf_anchor.py --size roberta_base \
    --batch-size 16 --steps 10
