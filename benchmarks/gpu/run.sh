#!/usr/bin/env bash
# GPU speed benchmark: gptx vs Hugging Face on GPT-J-6B (and a GPT-NeoX-20B-width slice).
#
#   bash benchmarks/gpu/run.sh            # on a GPU machine: about 5 minutes, results in $OUT or ./gpu-bench-out
#   bash benchmarks/gpu/run.sh --tiny     # toy sizes on the CPU, seconds
#
# Needs only torch (transformers optional: without it the Hugging Face rows are skipped). Installs
# nothing; gptx is imported from this repository through PYTHONPATH. Arguments go to bench_gpu.py
# (--help lists them). PYTHON picks the interpreter (default: the repository's .venv/bin/python that
# `make demo` / `make install` made, else python3, else python).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
default_python="$repo/.venv/bin/python"
[ -x "$default_python" ] || default_python="$(command -v python3 || command -v python)"
python="${PYTHON:-$default_python}"

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Large models fragment the caching allocator; expandable segments let freed blocks be reused.
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"

echo "== $(date -u '+%Y-%m-%d %H:%M:%S') UTC  $(uname -srm)"
# Versions from package metadata: importing torch and transformers here would cost seconds.
"$python" - <<'EOF'
import importlib.metadata as md
import importlib.util
import sys


def version(name):
    if importlib.util.find_spec(name) is None:
        return "not installed"
    try:
        return md.version(name)
    except md.PackageNotFoundError:  # importable without package metadata (a source build)
        return "present (version unknown)"


print(f"python {sys.version.split()[0]} at {sys.executable}")
print(f"torch {version('torch')}, transformers {version('transformers')}")
if version("torch") == "not installed":
    sys.exit("error: torch is not installed for this python (set PYTHON=...)")
EOF
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv || true
fi

exec "$python" "$here/bench_gpu.py" "$@"
