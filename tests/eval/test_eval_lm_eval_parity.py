"""Parity with lm-evaluation-harness itself (a test dependency): the real harness with its `hf` model on a
Hugging Face directory, against `gptx eval` (the real CLI) and `gptx lm-eval` on the same directory, on
tasks built from real text (the Python reference topics shipped with the interpreter): LAMBADA-style
zero- and 2-shot (few-shot from the same split and from a separate pool, contexts longer than the model,
so truncation counts), multiple choice (index, text and multiple golds, a description, acc_mutual_info),
rolling, and a WikiText-style task that the harness scores with its own `preprocess_wikitext.py`.

Accuracies must be equal, log-likelihood metrics within 1e-4 relative, every request's log-likelihood
within 1e-5 relative, and the standard errors as the harness computes them.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from eval_helpers import tiny_gptj
from gptx_testing import run_gptx, shared_path

pytest.importorskip("lm_eval.models.huggingface")

MAX_LEN = 64
BOOT = 1000  # bootstrap draws on both sides (the harness's default 100000 only takes longer)
EOT = "<|endoftext|>"


def _sentences(n: int) -> list[str]:
    from pydoc_data.topics import topics

    out: list[str] = []
    for name in sorted(topics):
        for s in re.split(r"(?<=[.!?])\s+", topics[name]):
            s = " ".join(s.split())
            if 9 <= len(s.split(" ")) <= 20 and re.fullmatch(r"[A-Za-z ,.'-]+", s) and s not in out:
                out.append(s)
                if len(out) == n:
                    return out
    raise AssertionError("not enough sentences")


def _wikify(title: str, text: str) -> str:
    """Real text written the way WikiText-2 raw writes it (what the harness's detokenizer undoes)."""
    s = re.sub(r"(\w)-(\w)", r"\1 @-@ \2", text)
    s = re.sub(r"([,.;:!?()])", r" \1 ", s)
    s = re.sub(r" +", " ", s).strip()
    return f" = {title} = \n\n {s} \n = = Notes = = \n\n {s[: len(s) // 2]} \n"


def _write_jsonl(path: Path, rows: list[dict], header: dict | None = None) -> None:
    lines = ([json.dumps({"gptx_task": header})] if header else []) + [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


MC_METRICS = """metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def _yaml(name: str, data: Path, body: str, train: Path | None = None) -> str:
    files = f"test: {data}" + (f", train: {train}" if train else "")
    return f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files: {{{files}}}\ntest_split: test\n{body}"


LW_BODY = """output_type: loglikelihood
doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
doc_to_target: "{{' '+text.split(' ')[-1]}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import PreTrainedTokenizerFast

    from gptx_cli.data.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("parity")
    os.environ.setdefault("HF_DATASETS_CACHE", str(root / "hf_cache"))
    hf_dir = root / "hf"
    tiny_gptj(seed=11, max_positions=MAX_LEN).save_pretrained(hf_dir)
    tok = load_tokenizer(shared_path("assets", "tokenizers", "gpt2"))
    PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=EOT, bos_token=EOT).save_pretrained(hf_dir)

    sents = _sentences(34)
    lw, lw_train = sents[:8], sents[8:14]
    tasks_dir, yaml_dir = root / "tasks", root / "yaml"
    tasks_dir.mkdir()
    yaml_dir.mkdir()
    d = yaml_dir

    _write_jsonl(d / "lw.jsonl", [{"text": s} for s in lw])
    _write_jsonl(d / "lw_train.jsonl", [{"text": s} for s in lw_train])
    (d / "lw.yaml").write_text(_yaml("lw", d / "lw.jsonl", LW_BODY))
    (d / "lwpool.yaml").write_text(
        _yaml(
            "lwpool",
            d / "lw.jsonl",
            LW_BODY + "training_split: train\nfewshot_split: train\n",
            d / "lw_train.jsonl",
        )
    )
    _write_jsonl(tasks_dir / "lw.jsonl", [{"text": s} for s in lw], {"name": "lw", "kind": "last_word"})
    _write_jsonl(tasks_dir / "lw_train.jsonl", [{"text": s} for s in lw_train])
    _write_jsonl(
        tasks_dir / "lwpool.jsonl",
        [{"text": s} for s in lw],
        {"name": "lwpool", "kind": "last_word", "fewshot_pool": "lw_train.jsonl"},
    )

    # Multiple choice: the sentence's first half, its own second half among two other endings.
    mc_src = sents[14:29]
    mc = []
    for i, s in enumerate(mc_src):
        words = s.split(" ")
        half = len(words) // 2
        others = [" ".join(mc_src[(i + k) % len(mc_src)].split(" ")[half:]) for k in (3, 7)]
        choices = others[:]
        choices.insert(i % 3, " ".join(words[half:]))
        mc.append({"query": "Sentence: " + " ".join(words[:half]), "choices": choices, "gold": i % 3})
    mc_int, mc_text, mc_multi = mc[:5], mc[5:10], mc[10:15]
    mc_text = [{**r, "gold": r["choices"][r["gold"]]} for r in mc_text]
    mc_multi = [{**r, "gold": [r["gold"], (r["gold"] + 1) % 3]} for r in mc_multi]
    common = 'output_type: multiple_choice\ndoc_to_text: "{{query}}"\ndoc_to_choice: choices\ndoc_to_target: gold\n'
    mi = "  - metric: acc_mutual_info\n    aggregation: mean\n    higher_is_better: true\n"
    description = "Finish each sentence from the Python reference.\n\n"
    for name, rows, extra, metrics, header in (
        ("mc", mc_int, "", MC_METRICS + mi, {"metrics": ["acc", "acc_norm", "acc_mutual_info"]}),
        (
            "mctext",
            mc_text,
            f"description: {json.dumps(description)}\n",
            MC_METRICS,
            {"description": description},
        ),
        ("mcmulti", mc_multi, "", MC_METRICS, {}),
    ):
        _write_jsonl(d / f"{name}.jsonl", rows)
        (d / f"{name}.yaml").write_text(_yaml(name, d / f"{name}.jsonl", common + extra + metrics))
        _write_jsonl(tasks_dir / f"{name}.jsonl", rows, {"name": name, "kind": "multiple_choice", **header})

    # Rolling: plain pages, and WikiText-style raw pages through the harness's own preprocessing.
    from pydoc_data.topics import topics

    names = ["assert", "break", "continue"]
    pages = [_wikify(n.title(), " ".join(topics[n].split())[:700]) for n in names]
    _write_jsonl(d / "wiki.jsonl", [{"page": p} for p in pages])
    (d / "preprocess_wikitext.py").write_text(
        "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer  # noqa\n"
    )
    (d / "wiki.yaml").write_text(
        _yaml(
            "wiki",
            d / "wiki.jsonl",
            'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
            "doc_to_target: !function preprocess_wikitext.wikitext_detokenizer\n"
            "process_results: !function preprocess_wikitext.process_results\n"
            "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
        )
    )
    _write_jsonl(
        tasks_dir / "wiki.jsonl", [{"page": p} for p in pages], {"kind": "rolling", "detokenizer": "wikitext"}
    )
    plain = [" ".join(topics[n].split())[:500] + "\n" for n in ("pass", "del")]
    _write_jsonl(d / "roll.jsonl", [{"page": p} for p in plain])
    (d / "roll.yaml").write_text(
        _yaml(
            "roll",
            d / "roll.jsonl",
            'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: page\n'
            "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
        )
    )
    _write_jsonl(tasks_dir / "roll.jsonl", [{"page": p} for p in plain], {"kind": "rolling"})
    # Generation (generate_until, exact_match): the first answer is the model's own greedy text, so one
    # document matches; the other answers are a second gold (list) and a plain miss.
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    queries = ["Question: " + s.split(" ")[0] for s in sents[29:33]]
    ids = tok.encode(queries[0])
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_id)
    own = tok.decode(out[0, len(ids) :].tolist()).split("\n")[0].split(tok.decode([tok.eos_id]))[0]
    gen = [
        {"query": q, "answer": ["nothing", own] if i == 0 else ["no", "never"]} for i, q in enumerate(queries)
    ]
    _write_jsonl(d / "gen.jsonl", gen)
    (d / "gen.yaml").write_text(
        _yaml(
            "gen",
            d / "gen.jsonl",
            'output_type: generate_until\ndoc_to_text: "{{query}}"\ndoc_to_target: answer\n'
            'generation_kwargs: {until: ["\\n"], max_gen_toks: 6, do_sample: false}\n'
            "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n",
        )
    )
    _write_jsonl(
        tasks_dir / "gen.jsonl", gen, {"name": "gen", "kind": "generate", "until": ["\n"], "max_gen_toks": 6}
    )
    return {"root": root, "hf": hf_dir, "tasks": tasks_dir, "yaml": yaml_dir}


def _harness(setup, tasks: list[str], num_fewshot: int) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    os.environ["DISABLE_MULTIPROC"] = "1"
    return lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(setup["hf"]), "dtype": "float32", "max_length": MAX_LEN},
        tasks=tasks,
        num_fewshot=num_fewshot,
        batch_size=4,
        device="cpu",
        # The local YAMLs only: indexing the harness's ~10k built-in task files costs ~15 s a run.
        task_manager=TaskManager(include_path=str(setup["yaml"]), include_defaults=False),
        log_samples=True,
        bootstrap_iters=BOOT,
    )


def _gptx(setup, tasks: list[str], num_fewshot: int, out: str) -> tuple[dict, dict]:
    out_dir = setup["root"] / out
    res = run_gptx(
        "eval", "--checkpoint-path", str(setup["hf"]), "--tasks", ",".join(tasks), "--tasks-dir",
        str(setup["tasks"]), "--num-fewshot", str(num_fewshot), "--batch-size", "3", "--bootstrap-iters",
        str(BOOT), "--log-samples", "--output-dir", str(out_dir), "--format", "json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    metrics = {t["task"]: t["metrics"] for t in report["tasks"]}
    samples = {
        t: [json.loads(line) for line in (out_dir / f"hf.samples_{t}.jsonl").read_text().splitlines()]
        for t in tasks
    }
    return metrics, samples


def _floats(x) -> list[float]:
    if isinstance(x, bool):
        return []
    if isinstance(x, float):
        return [x]
    if isinstance(x, (list, tuple)):
        return [f for item in x for f in _floats(item)]
    return []


def _compare(harness: dict, metrics: dict, samples: dict, tasks: list[str]) -> None:
    for task in tasks:
        ref = {k.split(",")[0]: v for k, v in harness["results"][task].items() if "," in k}
        got = metrics[task]
        for name, value in ref.items():
            if name.endswith("_stderr"):
                if value == "N/A":
                    assert got[name] == "N/A", (task, name)
                else:
                    assert got[name] == pytest.approx(value, rel=1e-4), (task, name)
            elif name.startswith("acc") or name == "exact_match":
                assert got[name] == value, (task, name)  # accuracies exactly
            else:
                assert got[name] == pytest.approx(value, rel=1e-4), (task, name)
        assert set(got) == set(ref), task
        ref_samples = sorted(harness["samples"][task], key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in samples[task]] == [s["doc_id"] for s in ref_samples]
        for mine, theirs in zip(samples[task], ref_samples, strict=True):
            # The same prompt strings, then the same log-likelihood per request.
            assert [list(a)[:1] for a in mine["arguments"]] == [list(a)[:1] for a in theirs["arguments"]]
            if task != "gen":
                assert [list(a)[:2] for a in mine["arguments"]] == [list(a)[:2] for a in theirs["arguments"]]
            if task == "gen":
                assert mine["resps"] == theirs["resps"]  # the same generated text
                continue
            ours, ref_lls = _floats(mine["resps"]), _floats(theirs["resps"])
            assert len(ours) == len(ref_lls) > 0
            for a, b in zip(ours, ref_lls, strict=True):
                assert a == pytest.approx(b, rel=1e-5, abs=1e-9), (task, mine["doc_id"])


ZERO_SHOT = ["lw", "mc", "mctext", "mcmulti", "roll", "wiki", "gen"]


@pytest.fixture(scope="module")
def harness_zero_shot(setup):
    return _harness(setup, ZERO_SHOT, 0)


def test_zero_shot_tasks_equal_the_harness(setup, harness_zero_shot):
    harness = harness_zero_shot
    metrics, samples = _gptx(setup, ZERO_SHOT, 0, "out0")
    _compare(harness, metrics, samples, ZERO_SHOT)
    # The WikiText counts are those of the raw page, not of the detokenized text that is scored.
    wiki = [s for s in samples["wiki"]]
    assert wiki[0]["arguments"][0][0] != wiki[0]["doc"]["raw"]
    assert metrics["gen"]["exact_match"] == 0.25  # the model's own text matched, the others did not


def test_two_shot_lambada_style_equals_the_harness(setup):
    tasks = ["lw", "lwpool"]
    harness = _harness(setup, tasks, 2)
    metrics, samples = _gptx(setup, tasks, 2, "out2")
    _compare(harness, metrics, samples, tasks)
    ctx = samples["lw"][0]["arguments"][0][0]
    assert "  " in ctx  # a shot's context and its " word" target meet with the target delimiter


def test_gptx_lm_eval_on_local_yaml_equals_lm_eval_hf(setup, harness_zero_shot):
    tasks = ["lw", "mc", "wiki", "gen"]
    harness = harness_zero_shot
    out = setup["root"] / "lmeval_out"
    res = run_gptx(
        "lm-eval", "--checkpoint-path", str(setup["hf"]), "--tasks", ",".join(tasks), "--include_path",
        str(setup["yaml"]), "--num_fewshot", "0", "--batch_size", "auto", "--output_path",
        str(out), "--log_samples",  # no --device: gptx picks what the machine has (the harness: cuda)
        env={"DISABLE_MULTIPROC": "1", "HF_DATASETS_CACHE": str(setup["root"] / "hf_cache")},
        timeout=900,  # the harness indexes its ~10k task YAMLs first; slow on a loaded machine
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    # The run is named as the checkpoint directory: the output subdirectory and model_name.
    (results_file,) = out.rglob("results_*.json")
    assert results_file.parent == out / "hf"
    full = json.loads(results_file.read_text())
    assert full["model_name"] == "hf"
    got = full["results"]
    # The results table has its real header (lm-eval's make_table with a pytablewriter that names it).
    assert "|Tasks|Version|Filter|n-shot|Metric|" in res.stdout.replace(" ", "")
    for task in tasks:
        for key, value in harness["results"][task].items():
            if "," not in key or key.startswith("perplexity_stderr"):
                continue  # (the harness CLI bootstraps 100000 draws, the reference run BOOT)
            if isinstance(value, float) and not math.isnan(value):
                if key.startswith("acc"):
                    assert got[task][key] == value, (task, key)
                else:
                    assert got[task][key] == pytest.approx(value, rel=1e-4), (task, key)
            else:
                assert got[task][key] == value, (task, key)
    assert list(out.rglob("samples_lw_*.jsonl"))


def test_gptx_lm_eval_one_line_errors(setup, tmp_path):
    res = run_gptx(
        "lm-eval", "--checkpoint-path", str(setup["hf"]), "--tasks", "lambada_openai", "--device", "cpu",
        env={"HF_DATASETS_CACHE": str(tmp_path / "empty_cache"), "HF_HOME": str(tmp_path / "hf_home")},
    )  # fmt: skip
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith("error: lm-eval could not load")
    assert "Traceback" not in res.stderr
    res = run_gptx("lm-eval", "--checkpoint-path", str(setup["hf"]), "--model", "hf", "--tasks", "lw")
    assert res.returncode != 0 and res.stderr.startswith("error: --model")


# ---------------------------------------------------------------------------------------------------
# The adapter's requests against HFLM directly, with a tokenizer whose BOS is not its EOS


def test_prefix_token_follows_the_hf_models_choice(setup, tmp_path):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedTokenizerFast

    from gptx_cli.data.tokenizer import load_tokenizer
    from gptx_cli.eval.harness import HarnessTokenizer
    from gptx_cli.eval.lm_eval_adapter import register

    hf_dir = tmp_path / "bos"
    tiny_gptj(seed=5, max_positions=MAX_LEN).save_pretrained(hf_dir)
    tok = load_tokenizer(shared_path("assets", "tokenizers", "gpt2"))
    PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=EOT, bos_token="!").save_pretrained(hf_dir)
    reference = HFLM(pretrained=str(hf_dir), batch_size=2, device="cpu", max_length=MAX_LEN, dtype="float32")
    assert reference.prefix_token_id == 0
    gptx_lm = register()(checkpoint=str(hf_dir), device="cpu", batch_size=3)
    assert gptx_lm.prefix_token_id == 0
    assert HarnessTokenizer(tok).prefix_token == tok.eos_id  # GPT-2 files: BOS = EOS = <|endoftext|>

    def reqs(kind, args_list):
        return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args_list)]

    lls = [("", " the keyword"), ("", "Hello there"), ("The statement is", " simple")]
    for (a, ga), (b, gb) in zip(
        gptx_lm.loglikelihood(reqs("loglikelihood", lls)),
        reference.loglikelihood(reqs("loglikelihood", lls)),
        strict=True,
    ):
        assert a == pytest.approx(b, rel=1e-5) and ga == gb
    docs = [(" ".join(_sentences(12)),)]
    got = gptx_lm.loglikelihood_rolling(reqs("loglikelihood_rolling", docs))
    ref = reference.loglikelihood_rolling(reqs("loglikelihood_rolling", docs))
    assert got == pytest.approx(ref, rel=1e-5)


def test_gptx_lm_eval_without_the_package_is_one_line(setup, tmp_path):
    """Where lm-eval is not installed (here: shadowed by a package that fails to import, first on the
    path), `gptx lm-eval` says so in one line, before loading anything."""
    shadow = tmp_path / "shadow" / "lm_eval"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named lm_eval')\n")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    res = run_gptx(
        "lm-eval", "--checkpoint-path", str(setup["hf"]), "--tasks", "lw", env={"PYTHONPATH": path}
    )
    assert res.returncode != 0
    assert (
        res.stderr.startswith("error: lm-eval is not installed") and len(res.stderr.strip().splitlines()) <= 2
    )
