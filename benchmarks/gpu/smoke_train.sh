#!/usr/bin/env bash
# The real CLI on a GPU: preprocess, train (bf16 autocast, eager and --compile), resume, eval, generate.
#
#   bash benchmarks/gpu/smoke_train.sh          # on a GPU machine, from a copy of the repository: ~2 min
#   TARGET=CPU STEPS=10 bash benchmarks/gpu/smoke_train.sh   # the same commands on a CPU, a few steps
#
# Runs gptx from the repository through `python -m gptx_cli` (nothing installed). Packages the GPU
# image may lack (jsonschema and its dependencies) can travel as wheels in ./.whl; they are installed
# into a temporary folder first. Work files go to a temporary folder; the log to $OUT when set.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
site="$(mktemp -d)"
if ! "$python" -c "import jsonschema" 2>/dev/null && compgen -G "$repo/.whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$repo"/.whl/*.whl
fi
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
gptx() { echo "+ gptx $*"; "$python" -m gptx_cli "$@"; }

work="$(mktemp -d)"
cd "$work"
config="$repo/configs/demo_neox.yaml"
target="${TARGET:-GPU}"
steps="${STEPS:-100}"  # checkpoint and eval interval; training runs 2, then 3 of them
device=cuda
[ "$target" = GPU ] || device=cpu
gpu=(--target-device "$target" --set model.vocab_size=4096 --set "loop.eval_frequency=$steps"
     --set "checkpoint.steps=$steps")
[ "$target" = GPU ] && gpu+=(--set precision.enabled=true --set precision.fp16_type=bfloat16)
t0=$(date +%s)
gptx preprocess --dataset python-docs --train-tokenizer 4096 --max-seq-length 128 --processes 8 --overwrite
echo "preprocess: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
gptx train "$config" --model-dir run_eager --max-steps $((2 * steps)) "${gpu[@]}"
gptx train "$config" --model-dir run_eager --max-steps $((3 * steps)) "${gpu[@]}"  # resumes
echo "train eager: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
# On the CPU the compiled run skips its evals: each is a second compile (no-grad graphs), half a
# minute of inductor's C++ build here, and the GPU run evaluates compiled as a user's run does.
compiled=()
[ "$target" = GPU ] || compiled=(--set "loop.eval_frequency=$((100 * steps))")
gptx train "$config" --model-dir run_compiled --max-steps $((2 * steps)) --compile "${gpu[@]}" "${compiled[@]}"
echo "train compiled: $(( $(date +%s) - t0 )) s"
gptx eval "$config" --checkpoint-path run_eager --device "$device" --set model.vocab_size=4096
gptx generate --checkpoint-path run_eager --prompt "Return a new list of" --max-new-tokens 40 --seed 0 --device "$device"
ls run_eager
