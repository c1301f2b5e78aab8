"""The docs cannot rot: every subcommand has a page and --help with an example, every `gptx ...` line
in the docs uses real subcommands and flags, ```console blocks run with the output they show, and every
other block of commands says why it is not run (`<!-- not run: REASON -->` on the line before it)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from gptx_testing import REPO, SHARED, built_once, run_gptx

DOCS = REPO / "docs"
COMMANDS = [
    "validate-config",
    "preprocess",
    "train",
    "continue-pretrain",
    "eval",
    "generate",
    "lm-eval",
    "convert checkpoint",
    "convert config",
    "report",
    "inspect",
]
FIRST_WORDS = {cmd.split()[0] for cmd in COMMANDS}
PAGES = {cmd: DOCS / f"{cmd.split()[0]}.md" for cmd in COMMANDS}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def _help(cmd: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "gptx_cli.cli", *cmd.split(), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "TERM": "dumb"},
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@cache
def _flags(cmd: str) -> frozenset[str]:
    return frozenset(re.findall(r"(--[a-z][a-z0-9_-]*)", _help(cmd))) | {"--help"}


def _doc_command_lines() -> list[tuple[str, str]]:
    """(page:line, command) for each `gptx ...` line in a code block, continuation lines joined."""
    found = []
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) in ("python", "json", "yaml"):
                continue
            first_line = text[: m.start(2)].count("\n") + 1
            lines = m.group(2).split("\n")
            i = 0
            while i < len(lines):
                line = lines[i].strip()
                lineno = first_line + i
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1] + " " + lines[i].strip()
                prompt = line.startswith("$ ")
                line = line.removeprefix("$ ")
                words = line.split()
                # Prompted lines are commands; unprompted ones only when they name a subcommand
                # (others are program output that happens to start with "gptx").
                if words[:1] == ["gptx"] and (prompt or (len(words) > 1 and words[1] in FIRST_WORDS)):
                    found.append((f"{page.name}:{lineno}", line.split("#")[0]))
                i += 1
    return found


def _subcommand(words: list[str]) -> str | None:
    if len(words) > 2 and words[1] == "convert":
        return f"convert {words[2]}"
    return words[1] if len(words) > 1 else None


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_has_a_docs_page_and_an_example_in_its_help(cmd: str) -> None:
    assert PAGES[cmd].is_file(), f"missing {PAGES[cmd]}"
    assert f"gptx {cmd}" in PAGES[cmd].read_text()
    assert re.search(r"Example: gptx " + re.escape(cmd), _help(cmd)), f"`gptx {cmd} --help` shows no example"


def test_docs_use_only_real_subcommands_and_flags() -> None:
    lines = _doc_command_lines()
    assert len(lines) > 30
    problems = []
    for where, line in lines:
        words = line.split()
        sub = _subcommand(words)
        if sub not in COMMANDS:
            problems.append(f"{where}: unknown subcommand in `{line}`")
            continue
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", line):
            if sub == "lm-eval" and "_" in flag:
                continue  # lm-evaluation-harness's own flags pass through (docs/lm-eval.md)
            if flag not in _flags(sub):
                problems.append(f"{where}: `gptx {sub}` has no flag {flag}")
    assert not problems, "\n".join(problems)


def _console_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == "console":
                blocks.append((f"{page.name}:{text[: m.start()].count(chr(10)) + 1}", m.group(2)))
    return blocks


def _matches(expected: str, actual: str) -> bool:
    """Line-by-line match where `...` stands for any text (doctest's ELLIPSIS), trailing spaces ignored."""
    pattern = "\n".join(
        ".*".join(re.escape(part) for part in line.rstrip().split("..."))
        for line in expected.strip().split("\n")
    )
    return (
        re.fullmatch(pattern, "\n".join(ln.rstrip() for ln in actual.strip().split("\n")), re.S) is not None
    )


COMMAND_LINE = re.compile(r"^\s*(\$ |gptx |bash |make |python |\.venv/|OUT=|PYTHON=|torchrun |export )", re.M)
NOT_RUN = re.compile(r"<!-- not run: (.{10,}) -->")


def test_every_block_of_commands_is_run_or_says_why_not() -> None:
    """A ```console block is run by the test below; any other block holding commands carries a
    `<!-- not run: REASON -->` line, so a renamed flag or a moved file in a runnable example fails CI."""
    unmarked = []
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) in ("console", "python", "json", "yaml") or not COMMAND_LINE.search(m.group(2)):
                continue
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            if not NOT_RUN.fullmatch(before):
                unmarked.append(f"{page.name}:{text[: m.start()].count(chr(10)) + 1}")
    assert not unmarked, "blocks of commands neither run (```console) nor marked not run: " + ", ".join(
        unmarked
    )


@pytest.fixture(scope="session")
def docs_run(reference_run: Path, tiny_data: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    """What the examples that need a model run on (built once per session): the training tests' tiny
    reference run (tests/conftest.py: a GPT-J of hidden size 32 trained 50 steps on cycling Greek-letter
    words, checkpoints 25 and 50, its own 258-token BPE), its Hugging Face export and a config for it."""

    def build(root: Path) -> None:
        r = run_gptx(
            "convert", "checkpoint", str(reference_run / "checkpoint_50"), "--tgt-fmt", "hf",
            "--output-dir", str(root / "hf_gptj"), "--no-progress",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        # tiny.yaml: the reference run's config (gptx_testing.tiny_args) with paths relative to the
        # example's directory.
        config = yaml.safe_load((REPO / "configs" / "tiny_gptj.yaml").read_text())
        init, fit = config["trainer"]["init"], config["trainer"]["fit"]
        init["model"].update(vocab_size=tiny_data["vocab_size"], hidden_size=32, num_heads=2, filter_size=64)
        init["model_dir"] = "./model_dir"
        init["logging"]["log_steps"] = 1
        fit["train_dataloader"]["data_dir"] = "./data/train"
        fit["val_dataloader"]["data_dir"] = "./data/val"  # the same dict as validate's (a YAML alias)
        (root / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    root = built_once(tmp_path_factory, "docs_run", build)
    return {
        "model_dir": reference_run,
        "runs/mine": reference_run,
        "hf_gptj": root / "hf_gptj",
        "tiny.yaml": root / "tiny.yaml",
        "data": tiny_data["train"].parent,
    }


# An example that names one of docs_run's paths gets them all in its scratch directory (copies: examples
# write eval results and conversions into them).
DOCS_RUN_NAMES = re.compile(r"(?<![\w./-])(model_dir|runs/mine|hf_gptj|tiny\.yaml)(?![\w.-])")


def _lay_out_docs_run(block: str, where: Path, request: pytest.FixtureRequest) -> None:
    if not DOCS_RUN_NAMES.search(block):
        return
    for name, path in request.getfixturevalue("docs_run").items():
        target = where / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "data":
            target.symlink_to(path)
        elif path.is_dir():
            shutil.copytree(path, target, symlinks=True)
        else:
            shutil.copyfile(path, target)


def _console_params() -> list[object]:
    """The console blocks; those that start several processes carry the `multiprocess` mark."""
    return [
        pytest.param(
            where, block, id=where, marks=[pytest.mark.multiprocess] if MULTIPROCESS.search(block) else []
        )
        for where, block in _console_blocks()
    ]


MULTIPROCESS = re.compile(r"--nproc [2-9]|--nnodes [2-9]")


@pytest.mark.parametrize("where,block", _console_params())
def test_console_examples_print_what_the_docs_show(
    where: str, block: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each `$ command` runs in a scratch dir (with configs/ and the reference configs at hand, and the
    tiny run of `docs_run` where the block names its model_dir, hf_gptj or tiny.yaml)."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "reference").symlink_to(SHARED / "reference" / "modelzoo-configs")
    (tmp_path / "tests").symlink_to(REPO / "tests")
    _lay_out_docs_run(block, tmp_path, request)
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1", "GPTX_SHARED": str(SHARED)}
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    steps: list[tuple[str, list[str]]] = []
    continued = False  # a command line ending in a backslash goes on on the next line
    for line in block.rstrip("\n").split("\n"):
        if continued:
            steps[-1] = (steps[-1][0][:-1] + " " + line.strip(), [])
        elif line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        continued = bool(steps) and not steps[-1][1] and steps[-1][0].endswith("\\")
    assert steps, f"{where}: a console block without a `$ ` command"
    for command, expected in steps:
        res = subprocess.run(  # stdout and stderr in one pipe, unbuffered: in the order a terminal shows
            ["bash", "-c", command], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=300,
        )  # fmt: skip
        out = res.stdout
        assert _matches("\n".join(expected), out), (
            f"{where}: `{command}` printed\n{out}\nbut the docs show\n" + "\n".join(expected)
        )
        assert shlex.split(command)
