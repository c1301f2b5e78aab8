"""How long a mistake takes to be answered: `gptx` commands that fail on a flag or an argument, against
the cost of `import torch` (the floor for any command that needs torch), in the same run.

Flag, config and task-file errors are checked before torch is imported, so they should cost a small
fraction of the torch import; a command that loads a model pays the import (and, for training,
torch.optim's import of torch._dynamo) once.

    .venv/bin/python benchmarks/bench_startup.py               # median of 5 runs each
    .venv/bin/python benchmarks/bench_startup.py --repeats 9
    .venv/bin/python benchmarks/bench_startup.py --repo ../old-checkout   # another version's gptx
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny_neox.yaml")

CASES = [
    ("reference: python -c 'import torch'", ["-c", "import torch"]),
    ("reference: python -c 'import torch.optim' + an optimizer", [
        "-c", "import torch; torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)"
    ]),
    ("gptx --help", ["-m", "gptx_cli", "--help"]),
    ("gptx validate-config tiny_neox.yaml", ["-m", "gptx_cli", "validate-config", TINY]),
    ("gptx train: --micro-batch-size -4", ["-m", "gptx_cli", "train", TINY, "--micro-batch-size", "-4"]),
    ("gptx train: --set loop.max_steps=-3", ["-m", "gptx_cli", "train", TINY, "--set", "loop.max_steps=-3"]),
    ("gptx eval: nothing to evaluate", ["-m", "gptx_cli", "eval", "--checkpoint-path", "."]),
    ("gptx generate: --greedy --top-k 5", [
        "-m", "gptx_cli", "generate", "--checkpoint-path", ".", "--prompt", "x", "--greedy", "--top-k", "5"
    ]),
    ("gptx preprocess: no --output-dir", ["-m", "gptx_cli", "preprocess", "-i", "in.jsonl"]),
]  # fmt: skip


def time_once(argv: list[str], cwd: str, repo: Path) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True)
    return time.perf_counter() - start, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repo", type=Path, default=REPO, help="the gptx checkout to time (default: this one)")
    args = p.parse_args()
    times: dict[str, list[float]] = {name: [] for name, _ in CASES}
    codes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeats):  # interleaved, so machine noise hits every case alike
            for name, argv in CASES:
                elapsed, code = time_once(argv, cwd, args.repo)
                times[name].append(elapsed)
                codes[name] = code
    floor = statistics.median(times[CASES[0][0]])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    print(
        f"{now}: wall time of a command, median of {args.repeats}, gptx from {args.repo} "
        f"(load average {load:.1f}, {os.cpu_count()} CPUs)"
    )
    print("| command | exit | median s | vs `import torch` |")
    print("|---|---:|---:|---:|")
    for name, _ in CASES:
        med = statistics.median(times[name])
        print(f"| {name} | {codes[name]} | {med:.2f} | {med / floor:.2f}x |")


if __name__ == "__main__":
    main()
