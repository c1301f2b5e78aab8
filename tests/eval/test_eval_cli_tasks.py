"""`gptx eval --tasks` end to end: a converted checkpoint scored through the CLI equals the same tasks
scored with transformers logits; bad task files fail with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import hf_logits_fn, tiny_neox
from gptx_testing import run_gptx, shared_path

from gptx_cli.eval.tasks import LoglikelihoodScorer, evaluate_task, load_task

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gptx_cli import load_model
    from gptx_cli.checkpoint import save_checkpoint_dir

    root = tmp_path_factory.mktemp("clitasks")
    hf = tiny_neox(seed=5)
    hf.save_pretrained(root / "hf")
    ours = load_model(str(root / "hf"))
    tok_dir = shared_path("assets", "tokenizers", "gpt2")
    ckpt = save_checkpoint_dir(
        root / "model_dir" / "checkpoint_3", ours.state_dict(), ours.cfg, step=3, tokenizer=str(tok_dir)
    )
    return hf, ckpt, tok_dir


def test_cli_task_scores_equal_transformers_scoring(checkpoint):
    from gptx_cli.data.tokenizer import load_tokenizer

    hf, ckpt, tok_dir = checkpoint
    res = run_gptx(
        "eval",
        "--checkpoint-path",
        str(ckpt),
        "--tasks",
        "choice_tiny,lambada_tiny",
        "--tasks",
        str(DATA / "wiki_tiny.jsonl"),
        "--tasks-dir",
        str(DATA),
        "--limit",
        "3",
        "--batch-size",
        "2",
        "--format",
        "json",
    )
    assert res.returncode == 0, res.stderr
    got = {t["task"]: t for t in json.loads(res.stdout)["tasks"]}
    assert set(got) == {"choice_tiny", "lambada_tiny", "wiki_tiny"}
    tok = load_tokenizer(str(tok_dir))
    scorer = LoglikelihoodScorer(hf_logits_fn(hf), max_length=64, batch_size=5)
    for name, result in got.items():
        ref = evaluate_task(load_task(name, str(DATA)), scorer, tok, limit=3)
        assert result["num_docs"] == 3
        assert result["metrics"].keys() == ref.metrics.keys()
        for metric, value in ref.metrics.items():
            if isinstance(value, str):  # "N/A" stderrs
                assert result["metrics"][metric] == value, (name, metric)
            else:
                assert result["metrics"][metric] == pytest.approx(value, rel=1e-4), (name, metric)
    # A gptx checkpoint's results land in its model_dir.
    written = json.loads((ckpt.parent / "eval_results" / "checkpoint_3.json").read_text())
    assert written["step"] == 3 and len(written["tasks"]) == 3


def test_cli_rejects_a_malformed_task_line_before_loading_the_model(checkpoint):
    _, ckpt, _ = checkpoint
    res = run_gptx("eval", "--checkpoint-path", str(ckpt), "--tasks", str(DATA / "bad_line.jsonl"))
    assert res.returncode == 1
    assert "bad_line.jsonl:2: not valid JSON" in res.stderr and "Traceback" not in res.stderr
    res = run_gptx("eval", "--checkpoint-path", str(ckpt))
    assert res.returncode == 2 and "nothing to evaluate" in res.stderr


def test_lm_eval_registration_needs_lm_eval():
    from gptx_cli.errors import UsageError
    from gptx_cli.eval.lm_eval_adapter import register

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="lm-eval is not installed"):
            register()
    else:
        cls = register()
        assert hasattr(cls, "loglikelihood_rolling") and hasattr(cls, "generate_until")


def test_tokenizer_falls_back_to_what_preprocess_recorded_for_the_training_data(checkpoint, tmp_path):
    from gptx_cli import load_model
    from gptx_cli.checkpoint import save_checkpoint_dir
    from gptx_cli.errors import UsageError
    from gptx_cli.eval.source import resolve_tokenizer

    _, ckpt, tok_dir = checkpoint
    model = load_model(str(ckpt))
    data_dir = tmp_path / "train_data"
    data_dir.mkdir()
    config = {
        "trainer": {
            "init": {
                "model_dir": str(tmp_path / "md"),
                "model": model.cfg.to_dict(),
                "loop": {"max_steps": 1},
            },
            "fit": {
                "train_dataloader": {"data_processor": "GptHDF5MapDataProcessor", "data_dir": str(data_dir)}
            },
        }
    }
    bare = save_checkpoint_dir(
        tmp_path / "md" / "checkpoint_1", model.state_dict(), model.cfg, step=1, config_yaml_dict=config
    )
    with pytest.raises(UsageError, match="records no tokenizer"):
        resolve_tokenizer(bare, None)
    (data_dir / "data_params.json").write_text(json.dumps({"processing": {"tokenizer": str(tok_dir)}}))
    # The model_dir stands for its latest checkpoint, as everywhere else.
    tok = resolve_tokenizer(tmp_path / "md", None)
    assert tok.eos_id == 50256 and tok.encode("Hello world") == [15496, 995]
