#!/usr/bin/env bash
# `gptx train` itself (data loader, trainer, metrics, checkpoint) on configs/params_gptj_6B.yaml cut to
# LAYERS layers, next to bench_gpu.py's training step for the same shape: does the real trainer reach
# the benchmark's tokens/s? Then profile_trainer.py on the same slice.
#   bash benchmarks/gpu/trainer_slice.sh   (GPU machine, ~3 min)
#
# Data: the built-in python-docs corpus at 2048 tokens per sample (250 samples). The full 28-layer
# model's final checkpoint (24 GB weights + 48 GB optimizer state) would not fit a 64 GB disk; LAYERS=4
# writes about 15 GB. Wheels for packages the GPU image lacks (jsonschema) travel in ./.whl.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
layers="${LAYERS:-4}"
steps="${STEPS:-40}"
site="$(mktemp -d)"
if ! "$python" -c "import jsonschema" 2>/dev/null && compgen -G "$repo/.whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$repo"/.whl/*.whl
fi
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
gptx() { echo "+ gptx $*"; "$python" -m gptx_cli "$@"; }

"$python" "$repo/benchmarks/gpu/bench_gpu.py" --layers "$layers" --steps 8 --out "$(mktemp -d)" \
    --cases gptj-train-gptx,gptj-train-gptx-compile | grep -A4 "^case " || true

work="$(mktemp -d)"
cd "$work"
gptx preprocess --dataset python-docs --train-tokenizer 4096 --max-seq-length 2048 --processes 8 --overwrite
d=./language/datasets/python_docs/hdf5_dataset
start=$(date +%s)
gptx train "$repo/configs/params_gptj_6B.yaml" --model-dir run --max-steps "$steps" --compile \
    --target-device GPU --set "model.num_hidden_layers=$layers" \
    --set "train_dataloader.data_dir=$d/train/" --set train_dataloader.batch_size=4 \
    --set train_dataloader.num_workers=2 --set "val_dataloader.data_dir=$d/val/" \
    --set val_dataloader.batch_size=4 --set val_dataloader.num_workers=2 --set logging.log_steps=10
echo "gptx train wall: $(( $(date +%s) - start )) s"
du -sh run/checkpoint_* || true
# Where the trainer's step differs from the benchmark's: both profiled on the same model and batch.
"$python" "$repo/benchmarks/gpu/profile_trainer.py" --data "$d" --layers "$layers"
