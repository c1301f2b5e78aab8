"""The demo's last check: the model's eval loss must fall well below the corpus's unigram entropy.

Usage: python scripts/demo_check.py MODEL_DIR DATA_DIR
The unigram entropy (nats/token) is what a model that ignores context can reach at best; a model
that learned anything from context scores well below it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np

# "Well below": at least one nat per token under the unigram entropy (the test of the script at a
# smaller size asks for less).
MARGIN_NATS = float(os.environ.get("DEMO_MARGIN_NATS", "1.0"))


def unigram_entropy(data_dir: Path) -> float:
    counts: np.ndarray = np.zeros(1, dtype=np.int64)
    for f in sorted(data_dir.glob("*.h5")):
        with h5py.File(f, "r") as h5:
            data = h5["data"][:]
        labels = data[:, 2][data[:, 1] == 1]
        c = np.bincount(labels)
        if len(c) > len(counts):
            c[: len(counts)] += counts
            counts = c
        else:
            counts[: len(c)] += c
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def main() -> int:
    model_dir, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    results = sorted(
        (model_dir / "eval_results").glob("checkpoint_*.json"), key=lambda p: int(p.stem.split("_")[-1])
    )
    if not results:
        print(f"demo check: no eval results in {model_dir / 'eval_results'}", file=sys.stderr)
        return 1
    metrics = json.loads(results[-1].read_text())
    loss = float(metrics["metrics"]["loss"] if "metrics" in metrics else metrics["loss"])
    entropy = unigram_entropy(data_dir)
    verdict = "ok" if loss < entropy - MARGIN_NATS else "FAILED"
    print(
        f"demo check: eval loss {loss:.3f} nats/token vs unigram entropy of the corpus {entropy:.3f} "
        f"({entropy - loss:+.3f} below): {verdict}"
    )
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
