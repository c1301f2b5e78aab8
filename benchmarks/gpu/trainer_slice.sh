#!/usr/bin/env bash
# Issue #14's GPU measurements as one prepared script (one H100/H200, about 8 minutes):
#   1. slice: the `gptx train --compile` loop against its bare step (train.step.Stepper, the same
#      components, in the same process) on configs/params_gptj_6B.yaml cut to LAYERS (4) layers,
#      batch 4 x 2048, bf16 autocast, fp32 AdamW. Target: the loop within 5% of the bare step.
#   2. full: GPT-J-6B at all 28 layers, same batch and precision, compiled, the loop end to end (data
#      loader, CheckLoss reads, metrics): its MFU. Target: >= 55%. The trainer's memory guard is off
#      for this row: it estimates 158 GiB where bench_gpu.py measured a 112 GiB peak on the H200.
#   3. stretch: the slice with --fp8 (torchao float8, rowwise) against bf16, 50 steps of real text:
#      tokens/s (target >= 1.3x) and the loss of the last 10 steps (target within 1%).
#   4. profile_trainer.py on the slice: a loop iteration against the bare step, kernel by kernel
#      (PROFILE=0 skips it).
# All rows come from benchmarks/bench_train.py (tables on stdout, JSON in $OUT/<row>/ when OUT is set).
# Checkpoint writes are off in the timed runs (72 GB for the full model would not fit a 64 GB disk).
#
#   bash benchmarks/gpu/trainer_slice.sh                     # GPU machine
#   TARGET=CPU bash benchmarks/gpu/trainer_slice.sh          # the same commands at toy size on the CPU
#
# Data: the built-in python-docs corpus at SEQ (2048) tokens per sample. Wheels for packages the GPU
# image lacks travel in ./.whl: jsonschema and its dependencies, and for row 3 torchao (the H200 image
# has none; pick the torchao release built for the image's torch, 2.11 when last read, e.g.
# `pip download --no-deps --only-binary=:all: torchao==<version> -d .whl`). Without torchao, row 3
# prints the trainer's one-line error and the script goes on.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
target="${TARGET:-GPU}"
site="$(mktemp -d)"
if ! "$python" -c "import jsonschema" 2>/dev/null && compgen -G "$repo/.whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$repo"/.whl/*.whl
fi
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
gptx() { echo "+ gptx $*"; "$python" -m gptx_cli "$@"; }
out_dir() { if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/$1"; echo "$OUT/$1"; else mktemp -d; fi; }

if [ "$target" = GPU ]; then
    layers="${LAYERS:-4}" full="${FULL_LAYERS:-28}" seq="${SEQ:-2048}" steps="${STEPS:-40}" fp8_steps="${FP8_STEPS:-50}"
    bench=(--device cuda --bf16 --compile --batch 4 --seq "$seq" --window 10 --repeats 1)
    shape=()
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
else  # toy width, a few steps: checks the script, measures nothing
    layers="${LAYERS:-2}" full="${FULL_LAYERS:-3}" seq="${SEQ:-128}" steps="${STEPS:-4}" fp8_steps="${FP8_STEPS:-4}"
    bench=(--device cpu --batch 4 --seq "$seq" --window 2 --repeats 1)
    shape=(--set model.hidden_size=64 --set model.num_heads=4 --set model.filter_size=256 --set model.rotary_dim=4
           --set model.vocab_size=4096 --set precision.enabled=false --set train_dataloader.num_workers=0)
fi
echo "== $(date -u '+%Y-%m-%d %H:%M:%S') UTC  target $target  commit ${GPTX_COMMIT:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
"$python" -c "import torch, importlib.util as u; print('torch', torch.__version__, '| torchao', 'yes' if u.find_spec('torchao') else 'no')"

work="$(mktemp -d)"
cd "$work"
gptx preprocess --dataset python-docs --train-tokenizer 4096 --max-seq-length "$seq" --processes 8 --overwrite
data="$work/language/datasets/python_docs/hdf5_dataset"
cfg=(--config "$repo/configs/params_gptj_6B.yaml" --data "$data/train/" "${shape[@]}")

echo "== 1. slice: gptx train --compile loop vs bare step ($layers layers)"
OUT="$(out_dir slice)" "$python" "$repo/benchmarks/bench_train.py" "${cfg[@]}" "${bench[@]}" \
    --layers "$layers" --steps "$steps" || echo "row 1 failed"

echo "== 2. full: gptx train end to end ($full layers)"
OUT="$(out_dir full)" "$python" "$repo/benchmarks/bench_train.py" "${cfg[@]}" "${bench[@]}" \
    --layers "$full" --steps "$steps" --no-bare --skip-memory-guard || echo "row 2 failed"

echo "== 3. stretch: --fp8 vs bf16 ($layers layers, $fp8_steps steps of python-docs)"
if [ "$target" = GPU ]; then
    OUT="$(out_dir fp8)" "$python" "$repo/benchmarks/bench_train.py" "${cfg[@]}" "${bench[@]}" \
        --layers "$layers" --steps "$fp8_steps" --no-bare --fp8 || echo "row 3 failed"
else  # no H100/H200 here: the flag must refuse with one line
    gptx train "$repo/configs/params_gptj_6B.yaml" --fp8 --target-device CPU --max-steps 1 \
        --set "train_dataloader.data_dir=$data/train/" && echo "row 3: --fp8 was accepted on a CPU" && exit 1
fi

if [ "${PROFILE:-1}" = 1 ]; then
    echo "== 4. profile: a loop iteration vs the bare step"
    tiny=()
    [ "$target" = GPU ] || tiny=(--tiny --at 3 --no-compile)
    "$python" "$repo/benchmarks/gpu/profile_trainer.py" --data "$data" --layers "$layers" "${tiny[@]}" || echo "row 4 failed"
fi
echo "== done"
