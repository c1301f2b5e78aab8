#!/usr/bin/env bash
# `make demo`: the real gptx commands a user would type, each echoed before it runs.
# Builds a corpus from real text already on the machine (the Python standard library's documentation),
# trains a byte-level BPE on it, preprocesses it into ModelZoo HDF5, trains a small GPT-NeoX (or GPT-J:
# `make demo ARCH=gptj`), evaluates it, generates a continuation and plots the run.
#
# Knobs (for a quick look, and for the test that runs this script at a smaller size):
#   ARCH=neox|gptj  DEMO_DIR=where to work (default: the repo)  DEMO_STEPS=N  DEMO_VOCAB=N
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "${DEMO_DIR:-$repo}"
# Configs as a user would type them: relative when the demo runs in the repo.
configs="$repo/configs"
[ "$(pwd)" = "$repo" ] && configs=configs

arch="${1:-${ARCH:-neox}}"
case "$arch" in
  neox|gpt-neox) config="$configs/demo_neox.yaml"; model_dir=model_dir/demo_neox ;;
  gptj|gpt-j) config="$configs/demo_gptj.yaml"; model_dir=model_dir/demo_gptj ;;
  *) echo "demo: unknown ARCH '$arch' (neox or gptj)" >&2; exit 2 ;;
esac
data=./language/datasets/python_docs/hdf5_dataset
steps="${DEMO_STEPS:-}"
vocab="${DEMO_VOCAB:-4096}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

run() {
  local shown="" arg
  for arg in "$@"; do
    case "$arg" in *" "*) shown+=" \"$arg\"" ;; *) shown+=" $arg" ;; esac
  done
  printf '\n\033[1m$%s\033[0m\n' "$shown"
  "$@"
}

start=$(date +%s)
run gptx validate-config "$config" --summary
run gptx preprocess --dataset python-docs --train-tokenizer "$vocab" --max-seq-length 128 --processes 2 --overwrite
rm -rf "$model_dir"   # a fresh run each time (gptx train would otherwise resume from the last checkpoint)
overrides=()
[ "$vocab" = 4096 ] || overrides+=(--set "model.vocab_size=$vocab")
run gptx train "$config" ${steps:+--max-steps "$steps"} "${overrides[@]}"
run gptx eval "$config" --checkpoint-path "$model_dir" "${overrides[@]}"
run gptx generate --checkpoint-path "$model_dir" --prompt "Return a new list of" \
  --max-new-tokens 60 --temperature 0.7 --top-k 40 --seed 0
run gptx report "$model_dir"
python "$repo/scripts/demo_check.py" "$model_dir" "$data/train"

cat <<MSG

Done in $(( $(date +%s) - start )) s.
  model checkpoints   $model_dir/checkpoint_*/ (safetensors + gptx.json + config.yaml + tokenizer.json)
  metrics             $model_dir/metrics.jsonl, eval results in $model_dir/eval_results/*.json
  loss plot           $model_dir/report.png
  TensorBoard logs    $model_dir/train and $model_dir/eval   (tensorboard --logdir $model_dir)
Next:
  gptx generate --checkpoint-path $model_dir --prompt "Open a file"     # write more
  gptx convert checkpoint $model_dir --tgt-fmt hf --output-dir hf_model      # export to Hugging Face
  gptx validate-config configs/params_gptj_6B.yaml --summary                # the real thing
  docs/getting-started.md                                                   # the same on a GPU box
MSG
