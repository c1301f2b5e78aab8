"""Run every multi-process test (`@pytest.mark.multiprocess`: --nproc, --nnodes, the SLURM script) N
times in a loop, outside the normal suite, and print per test how many runs failed:

    PYTHONPATH=. .venv/bin/python benchmarks/loop_multiprocess.py              # 20 runs: hours on 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/loop_multiprocess.py --runs 1 -k launch

Each run is one pytest session over the marked tests (results read from its JUnit XML), so the
session fixtures (the tiny data set, the reference run) are made again every run, as in CI. `--workers 2` runs the session on two xdist workers, as `make test` does (more load per test);
the default runs the tests one after another. A test that fails is named with its first error line
after every run; the table at the end is the record for docs/benchmarks.md ("0 failures in 20").
tests/test_markers.py checks that every test passing --nproc or --nnodes carries the mark.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pytest_cmd(args: argparse.Namespace, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-m", "multiprocess", "-p", "no:cacheprovider", *extra]
    if args.k:
        cmd += ["-k", args.k]
    return cmd


def collect(args: argparse.Namespace) -> list[str]:
    r = subprocess.run(pytest_cmd(args, "--collect-only", "-q"), cwd=REPO, capture_output=True, text=True)
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    if r.returncode != 0 or not ids:
        sys.exit(f"error: collecting the multiprocess tests failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return ids


def key_of(test_id: str) -> tuple[str, str]:
    """(module name, test name with its parameters): what a collected id and a JUnit test case share."""
    path, _, name = test_id.partition("::")
    return Path(path).stem, name


def one_run(args: argparse.Namespace, xml: Path) -> dict[tuple[str, str], str]:
    """{key_of(test): "" when it passed, "skipped: ..." or its first error line} for one pytest session."""
    extra = ["-q", f"--junitxml={xml}"]
    if args.workers:
        extra += ["-n", str(args.workers), "--dist", "worksteal"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(pytest_cmd(args, *extra), cwd=REPO, env=env, capture_output=True, text=True)
    results: dict[tuple[str, str], str] = {}
    if not xml.is_file():
        return results
    for case in ET.parse(xml).getroot().iter("testcase"):
        key = (case.get("classname", "").rsplit(".", 1)[-1], case.get("name", ""))
        failed = [e for tag in ("failure", "error") for e in case.findall(tag)]
        skipped = case.find("skipped")
        if failed:
            text = (failed[0].get("message") or failed[0].text or "failed").strip() or "failed"
            results[key] = text.splitlines()[0][:200]
        elif skipped is not None:
            results[key] = "skipped: " + (skipped.get("message") or "")
        else:
            results[key] = ""
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0, help="xdist workers per session (0: none)")
    parser.add_argument("-k", default=None, help="only the marked tests matching this pytest -k expression")
    args = parser.parse_args()
    ids = collect(args)
    print(f"{len(ids)} multi-process tests, {args.runs} run(s) each", file=sys.stderr, flush=True)
    failures = {test_id: 0 for test_id in ids}
    runs = {test_id: 0 for test_id in ids}
    skips = {test_id: 0 for test_id in ids}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.runs + 1):
            t0 = time.time()
            results = one_run(args, Path(tmp) / f"run-{i}.xml")
            for test_id in ids:
                outcome = results.get(key_of(test_id), "no result (the session died?)")
                runs[test_id] += 1
                if outcome.startswith("skipped"):
                    skips[test_id] += 1
                elif outcome:
                    failures[test_id] += 1
                    print(f"run {i}: FAILED {test_id}: {outcome}", file=sys.stderr, flush=True)
            print(f"run {i}/{args.runs} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {platform.node()}, {os.cpu_count()} cores, "
        f"{args.runs} run(s), workers {args.workers or 'none'}, {(time.time() - started) / 60:.1f} min; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )
    print("| test | runs | failures | skipped |")
    print("|---|---:|---:|---:|")
    for test_id in ids:
        print(f"| {test_id} | {runs[test_id]} | {failures[test_id]} | {skips[test_id]} |")
    print(f"total: {sum(failures.values())} failure(s) in {sum(runs.values())} test runs")
    sys.exit(1 if any(failures.values()) else 0)


if __name__ == "__main__":
    main()
