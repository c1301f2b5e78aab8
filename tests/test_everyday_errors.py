"""Issue #24: inputs people meet every day. Each bad input is a one-line error naming the flag, file or
line (exit != 0, no traceback), results are always saved or the run fails, and limits are checked.
Every numeric flag goes through one check (`config.flags.check_number`), every output path through one
(`fsutil.check_output`)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gptx_testing import TINY, run_gptx, shared_path

DATA = Path(__file__).parent / "eval" / "data"


def _one_line_error(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and text in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "internal error" not in r.stderr


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """A GPT-2-vocabulary model (64 positions) in a model_dir without CONFIG, a second run's checkpoint
    of the same step, and a model whose vocabulary (97) the GPT-2 tokenizer overruns."""
    from gptx_cli.api import build_model
    from gptx_cli.checkpoint import save_checkpoint_dir

    root = tmp_path_factory.mktemp("everyday")
    tok = str(shared_path("assets", "tokenizers", "gpt2"))
    gpt2 = build_model(dataclasses.replace(TINY, vocab_size=50257), seed=0)
    small = build_model(TINY, seed=0)
    mine = save_checkpoint_dir(
        root / "mine" / "checkpoint_3", gpt2.state_dict(), gpt2.cfg, step=3, tokenizer=tok
    )
    config = yaml.safe_load((mine / "config.yaml").read_text())
    config["trainer"]["init"]["model_dir"] = str(mine.parent)
    (root / "mine.yaml").write_text(yaml.safe_dump(config))
    return {
        "root": root,
        "config": root / "mine.yaml",
        "mine": mine.parent,
        "other": save_checkpoint_dir(root / "other" / "checkpoint_3", gpt2.state_dict(), gpt2.cfg, step=3, tokenizer=tok),
        "small": save_checkpoint_dir(root / "small" / "checkpoint_1", small.state_dict(), small.cfg, step=1, tokenizer=tok),
    }  # fmt: skip


def _eval_tasks(ckpt: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_gptx("eval", "--checkpoint-path", str(ckpt), "--tasks", str(DATA / "lambada_tiny.jsonl"),
                    "--limit", "2", "--bootstrap-iters", "0", "--device", "cpu", *extra)  # fmt: skip


# ------------------------------------------------------------------------------ one check per numeric flag


def test_every_numeric_flag_of_every_command_has_a_range_rule():
    import typer

    from gptx_cli.cli import app
    from gptx_cli.commands.options import NUMBER_RULES, flag_name, numeric_params

    flags = {flag_name(p) for _, p in numeric_params(typer.main.get_command(app))}
    assert len(flags) > 20
    assert flags <= set(NUMBER_RULES), sorted(flags - set(NUMBER_RULES))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--limit", "inf"], "--limit inf: must be a finite number, got inf"),
        (["eval", "--limit", "0"], "--limit 0: must be > 0, got 0"),
        (["eval", "--max-length", "0"], "--max-length 0: must be >= 2, got 0"),
        (["lm-eval", "--max-length", "0"], "--max-length 0: must be >= 2, got 0"),
        (["generate", "--sample", "--seed", "99999999999999999999999"], "--seed 99999999999999999999999: must be at most"),
        (["preprocess", "--shard-mb", "nan"], "--shard-mb nan: must be a finite number, got nan"),
        (["preprocess", "--shard-mb", "0"], "--shard-mb 0: must be > 0, got 0"),
        (["generate", "--top-k", "0"], "--top-k 0: must be >= 1, got 0"),
        (["eval", "--num-fewshot", "-1"], "--num-fewshot -1: must be >= 0, got -1"),
    ],
)  # fmt: skip
def test_a_bad_number_is_a_one_line_error_naming_the_flag(args, message, tmp_path):
    r = run_gptx(*args[:1], "--checkpoint-path", str(tmp_path), *args[1:]) if args[0] != "preprocess" else (
        run_gptx(*args, "--input", str(tmp_path), "--output-dir", str(tmp_path / "out"))
    )  # fmt: skip
    _one_line_error(r, 2, message)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ one check per output path


def _metrics(model_dir: Path, step: object = 1) -> Path:
    model_dir.mkdir(exist_ok=True)
    (model_dir / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 1.0, "lr": 1e-3}) + "\n")
    return model_dir


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("/proc/x.png", "--output /proc/x.png: cannot write in /proc"),
        ("{tmp}", "is a directory; give a file name"),
        ("{tmp}/plot.txt", "unknown file type '.txt' (use one of .png, .pdf, .svg)"),
        ("{tmp}/run/metrics.jsonl/x.png", "metrics.jsonl is a file, so nothing can be written under it"),
    ],
)
def test_report_output_is_checked_before_plotting(tmp_path, output, message):
    run = _metrics(tmp_path / "run")
    _one_line_error(run_gptx("report", str(run), "-o", output.format(tmp=tmp_path)), 2, message)


def test_report_names_the_line_whose_step_is_not_a_number(tmp_path):
    run = _metrics(tmp_path / "run", step="x")
    _one_line_error(
        run_gptx("report", str(run)), 1, "metrics.jsonl:1: 'step' must be a whole number, got 'x'"
    )


def test_eval_output_dir_naming_a_file_is_refused(ckpts, tmp_path):
    (tmp_path / "f").write_text("")
    r = _eval_tasks(ckpts["mine"], "--output-dir", str(tmp_path / "f"))
    _one_line_error(r, 2, f"--output-dir {tmp_path / 'f'}: is a file, not a directory")


# ------------------------------------------------------------------------------ token ids past the vocabulary


def test_eval_tasks_with_a_tokenizer_past_the_models_vocabulary_is_named(ckpts):
    r = _eval_tasks(ckpts["small"])
    _one_line_error(r, 2, "is outside the model's vocabulary of 97")
    assert r.stderr.startswith("error: tokenizer gpt2") and "--tokenizer" in r.stderr


def test_lm_eval_model_with_a_tokenizer_past_the_vocabulary_is_named(ckpts):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from gptx_cli.errors import UsageError
    from gptx_cli.eval.lm_eval_adapter import register

    lm = register()(checkpoint=str(ckpts["small"]), device="cpu")
    req = Instance("loglikelihood", {}, ("The cat sat on the", " mat"), 0)
    with pytest.raises(UsageError, match="token id .* is outside the model's vocabulary of 97"):
        lm.loglikelihood([req])


# ------------------------------------------------------------------------------ results always saved


def test_eval_of_a_model_dir_without_config_writes_beside_its_checkpoint(ckpts):
    r = _eval_tasks(ckpts["mine"], "--overwrite")
    assert r.returncode == 0, r.stderr
    written = ckpts["mine"] / "eval_results" / "checkpoint_3.json"
    assert json.loads(written.read_text())["tasks"][0]["num_docs"] == 2
    assert f"wrote {written}" in r.stdout
    assert "checkpoint_3 " in r.stdout and "mine " not in r.stdout  # the table names the checkpoint


def test_eval_with_a_config_writes_beside_the_checkpoint_it_evaluated(ckpts):
    """CONFIG's model_dir is `mine`; the checkpoint is another run's of the same step: its results go
    beside it, not onto mine/eval_results/checkpoint_3.json."""
    r = _eval_tasks(ckpts["other"], str(ckpts["config"]), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (ckpts["other"].parent / "eval_results" / "checkpoint_3.json").is_file()


def test_eval_all_refuses_an_existing_result_before_any_work(ckpts, tmp_path):
    import shutil

    model_dir = tmp_path / "run"
    for step in (1, 2):
        shutil.copytree(ckpts["mine"] / "checkpoint_3", model_dir / f"checkpoint_{step}")
        (model_dir / f"checkpoint_{step}" / "gptx.json").write_text(
            (ckpts["mine"] / "checkpoint_3" / "gptx.json").read_text().replace('"step": 3', f'"step": {step}')
        )
    (model_dir / "eval_results").mkdir()
    (model_dir / "eval_results" / "checkpoint_2.json").write_text("{}")
    r = run_gptx("eval", "--all", "--model-dir", str(model_dir), "--tasks", str(DATA / "lambada_tiny.jsonl"))
    _one_line_error(r, 2, "checkpoint_2.json already exists")
    assert sorted(p.name for p in (model_dir / "eval_results").iterdir()) == ["checkpoint_2.json"]


def test_eval_max_length_past_the_models_positions_needs_extrapolate(ckpts):
    r = _eval_tasks(ckpts["mine"], "--max-length", "100000")
    _one_line_error(r, 2, "--max-length 100000: the model was trained on 64 positions")
    assert "--extrapolate" in r.stderr
    r = _eval_tasks(
        ckpts["mine"], "--max-length", "80", "--extrapolate", "--output-dir", str(ckpts["root"] / "x")
    )
    assert r.returncode == 0, r.stderr


def test_eval_limit_below_one_is_a_fraction(ckpts, tmp_path):
    r = run_gptx("eval", "--checkpoint-path", str(ckpts["mine"]), "--tasks", str(DATA / "lambada_tiny.jsonl"),
                 "--limit", "0.25", "--format", "json", "--output-dir", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr
    n_docs = sum(1 for line in (DATA / "lambada_tiny.jsonl").read_text().splitlines() if line.strip())
    assert json.loads(r.stdout)["tasks"][0]["num_docs"] == -(-n_docs // 4)


# ------------------------------------------------------------------------------ lm-eval arguments, up front


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lmeval_args")
    bad_yaml, bad_data = root / "bad_yaml", root / "bad_data"
    bad_yaml.mkdir()
    bad_data.mkdir()
    (bad_yaml / "t.yaml").write_text("task: t\ndataset_path: json\n  oops: [\n")
    (bad_data / "t.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (bad_data / "t.yaml").write_text(
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: t.jsonl}\ntest_split: test\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
    )
    return {"bad_yaml": bad_yaml, "bad_data": bad_data}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--num_fewshot", "-1"], 2, "--num_fewshot -1: must be >= 0, got -1"),
        (["--limit", "0"], 2, "--limit 0: must be > 0, got 0"),
        (["--limit", "-1"], 2, "--limit -1: must be > 0, got -1"),
        (["--limit", "nan"], 2, "--limit nan: must be a finite number, got nan"),
        (
            ["--output_path", "{file}/out", "--log_samples"],
            2,
            "is a file, so nothing can be written under it",
        ),
        (
            ["--output_path", "/proc/gptx-out", "--log_samples"],
            2,
            "--output_path /proc/gptx-out: cannot write",
        ),
        (["--include_path", "{bad_yaml}"], 1, "t.yaml:3: not a valid task YAML"),
        (["--include_path", "{bad_data}"], 1, "t.jsonl:2: not valid JSON"),
        (["--max-length", "1000"], 2, "--max-length 1000: the model was trained on 64 positions"),
    ],
)
def test_lm_eval_arguments_are_checked_before_the_harness_starts(
    ckpts, task_dirs, tmp_path, args, code, message
):
    pytest.importorskip("lm_eval")
    (tmp_path / "file").write_text("")
    fill = {"file": tmp_path / "file", **task_dirs}
    args = [a.format(**fill) for a in args]
    r = run_gptx("lm-eval", "--checkpoint-path", str(ckpts["mine"]), "--tasks", "t", *args)
    _one_line_error(r, code, message)


# ------------------------------------------------------------------------------ disk full in train_state.pt

FULL_DISK = """
import resource, signal, sys, torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
from pathlib import Path
from gptx_cli.api import build_model
from gptx_cli.checkpoint import save_checkpoint_dir
from gptx_cli.errors import CheckpointError
from gptx_cli.train.state import write_train_state
sys.path.insert(0, {tests!r})
from gptx_testing import TINY
m, out = build_model(TINY), Path(sys.argv[1])
save_checkpoint_dir(out / "checkpoint_1", m.state_dict(), m.cfg, step=1)
try:
    save_checkpoint_dir(out / "checkpoint_2", m.state_dict(), m.cfg, step=2,
                        write_extra_files=lambda tmp: write_train_state(tmp, {{"big": torch.zeros(1 << 20)}}))
except CheckpointError as err:
    print(err)
"""


def test_a_full_disk_while_train_state_is_written_is_a_named_error(tmp_path):
    """The weights fit, train_state.pt does not (the kernel's file-size limit fails write(2) as a full
    disk would): torch's `[enforce fail at inline_container.cc]` becomes the checkpoint error."""
    code = FULL_DISK.format(tests=str(Path(__file__).parent))
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{tmp_path / 'checkpoint_2'}: cannot write the checkpoint: train_state.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1"]  # the previous one intact


# ------------------------------------------------------------------------------ one dtype resolver


@pytest.mark.parametrize("command", ["generate", "convert"])
def test_one_dtype_resolver_names_the_flag_in_every_command(ckpts, tmp_path, command):
    import torch

    from gptx_cli.weights import resolve_dtype

    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("torch.float16") is torch.float16
    ckpt = str(ckpts["mine"] / "checkpoint_3")
    args = (
        ["generate", "--checkpoint-path", ckpt, "--prompt", "x", "--dtype", "int8"]
        if command == "generate"
        else [
            "convert",
            "checkpoint",
            ckpt,
            "--tgt-fmt",
            "hf",
            "--output-dir",
            str(tmp_path / "o"),
            "--dtype",
            "int8",
        ]
    )
    _one_line_error(run_gptx(*args), 2, "--dtype 'int8': choose one of float32, bfloat16, float16")


# ------------------------------------------------------------------------------ generate: one front door


def test_prompts_file_follows_the_context_rule_of_one_prompt(ckpts, tmp_path):
    """--prompts-file refused what --prompt lowered; both now lower max_new_tokens to fit, with a note."""
    ckpt = str(ckpts["mine"] / "checkpoint_3")
    (tmp_path / "p.txt").write_text("Once upon a time\n")
    many = run_gptx("generate", "--checkpoint-path", ckpt, "--prompts-file", str(tmp_path / "p.txt"),
                    "--max-new-tokens", "100", "--device", "cpu")  # fmt: skip
    one = run_gptx("generate", "--checkpoint-path", ckpt, "--prompt", "Once upon a time", "--format", "json",
                   "--max-new-tokens", "100", "--device", "cpu")  # fmt: skip
    assert many.returncode == 0 and one.returncode == 0, many.stderr + one.stderr
    note = "max_new_tokens lowered to 60 to fit the context of 64"
    assert f"note: {note}" in many.stderr and f"note: {note}" in one.stderr
    a, b = json.loads(many.stdout), json.loads(one.stdout)
    assert a["notes"] == b["notes"] == [note] and len(a["tokens"]) == len(b["tokens"])


def test_sampling_rules_live_in_the_sampling_config_and_need_no_torch():
    code = (
        "import sys\nfrom gptx_cli.eval.sampling import SamplingConfig\nfrom gptx_cli.errors import UsageError\n"
        "try:\n    SamplingConfig.from_flags(greedy=True, top_k=5)\nexcept UsageError as e:\n    print(e)\n"
        "print(SamplingConfig.from_flags(temperature=0.5).do_sample, 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines() == [
        "--greedy cannot be combined with --sample, --temperature > 0, --top-k or --top-p",
        "True False",
    ], r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preprocess", "-i", "{f}", "-o", "{f}", "--train-tokenizer", "300"], "--output-dir {f}: is a file, not a directory"),
        (["preprocess", "-i", "{f}", "-o", "/proc/gptx-x", "--train-tokenizer", "300"], "--output-dir /proc/gptx-x: cannot write in /proc"),
        (["convert", "checkpoint", "{ckpt}", "--tgt-fmt", "hf", "--output-dir", "{f}"], "--output-dir {f}: is a file, not a directory"),
        (["convert", "checkpoint", "{ckpt}", "--tgt-fmt", "hf", "--output-dir", "/proc/gptx-x"], "--output-dir /proc/gptx-x: cannot write in /proc"),
        (["convert", "config", "{ckpt}/config.yaml", "--src-fmt", "trainer", "--tgt-fmt", "hf", "--output", "/proc/x.json"], "--output /proc/x.json: cannot write in /proc"),
    ],
)  # fmt: skip
def test_every_command_checks_its_output_path_first(ckpts, tmp_path, args, message):
    f = tmp_path / "f.txt"
    f.write_text("some text\n")
    fill = {"f": f, "ckpt": ckpts["mine"] / "checkpoint_3"}
    r = run_gptx(*[a.format(**fill) for a in args])
    _one_line_error(r, 2, message.format(**fill))


def test_lm_eval_fails_when_the_harness_saved_no_results(tmp_path):
    """The harness only logs a failed save; `gptx lm-eval` then exits 1 instead of 0."""
    import time

    pytest.importorskip("lm_eval")

    from gptx_cli.errors import DataError
    from gptx_cli.eval.lm_eval_adapter import _check_saved

    started = time.time()
    with pytest.raises(DataError, match="lm-eval did not save its results to --output_path"):
        _check_saved(str(tmp_path), "checkpoint_3", started)
    (tmp_path / "checkpoint_3").mkdir()
    (tmp_path / "checkpoint_3" / "results_2026-12-07T06-00-00.json").write_text("{}")
    _check_saved(str(tmp_path), "checkpoint_3", started)  # saved now: no error
    with pytest.raises(DataError):
        _check_saved(str(tmp_path / "out.json"), "checkpoint_3", started)
