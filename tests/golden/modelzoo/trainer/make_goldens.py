"""Make the trainer goldens in this directory with Cerebras ModelZoo 2.10's own trainer (`cszoo fit`).

Runs ONLY in the ModelZoo reference environment (cerebras-pytorch 2.10.0, ModelZoo Release_2.10.0,
CPU backend); the CI test (tests/train/test_modelzoo_trainer_goldens.py) only reads what it writes:

    PYTHONPATH=/tmp/mzref/stubs /tmp/mzref/venv/bin/python tests/golden/modelzoo/trainer/make_goldens.py

What it does, in order:

1. data/: a small corpus of short documents (`corpus.jsonl`, made here from a fixed seed) tokenized
   by ModelZoo's own preprocessing (`cszoo data_preprocess run`) with the byte-level tokenizer in
   data/tokenizer/ (258 tokens: 256 bytes + <|endoftext|> + <|padding|>; its tokenizer.json was
   trained by `gptx preprocess --train-tokenizer 258`, tokenizer_config.json names its specials for
   transformers' AutoTokenizer) at max_seq_length 32: `hdf5/` (packed, [n, 3, 32]) and `hdf5_vsl/`
   (`use_vsl: True`, [n, 5, 32]). Both sides train on these committed files.
2. For every case in CASES: a tiny config derived from a published ModelZoo config
   (/work/shared/reference/modelzoo-configs/, the same files as configs/ in the repo), changing only
   sizes (model width/depth/vocab, sequence length, batch, step counts of the schedule) plus what
   the case is about and what a CPU fp32 run needs (backend CPU, precision disabled, no eval, no
   workers, log every step, the ComputeNorm callback, save_initial_checkpoint). It is written to
   `<case>/config.yaml` with the data dir and model_dir as placeholders, then run by `cszoo fit`.
3. From the run: `<case>/golden.json` (per step: loss, lr of every optimizer param group, and
   ModelZoo's model_wise_grad_norm, all read from the run's TensorBoard events) and
   `<case>/init.safetensors`: ModelZoo's checkpoint_0.mdl (save_initial_checkpoint) in gptx's
   parameter names, fp32. ModelZoo's rotary embedding rotates interleaved pairs (2i, 2i+1)
   (layers/RotaryPositionEmbeddingHelper.py: rotate_every_two), gptx's default layout is the half
   split, so the first rotary_dim rows of every q/k head are reordered (even rows, then odd rows) as
   gptx's Hugging Face GPT-J adapter does (gptx_cli/model/hf.py: _half_from_interleaved); q, k and v
   are concatenated into gptx's fused qkv. That changes no function value.
4. mup_init_std.json: ModelZoo's per-tensor standard deviation (float64, population) of three freshly
   initialised tiny models, by ModelZoo parameter name, with the model section each was built from:
   GPT-J without muP (the gptj_6b case), GPT-J muP and GPT-2 muP (params_gptj_6B_muP.yaml at the tiny
   sizes, base sizes at half the width, the published muP initializers verbatim; GPT-2 with
   `name: gpt2`). Each comes from `cszoo fit` (one step) with save_initial_checkpoint: the tensors of
   checkpoint_0.mdl. See make_mup_init_std.

Arguments select parts: `data`, case names, `mup_init_std` (default: everything). The outputs are
deterministic: a rerun rewrites identical files.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REFERENCE = Path(os.environ.get("MODELZOO_CONFIGS", "/work/shared/reference/modelzoo-configs"))
MZREF = Path(os.environ.get("MZREF_DIR", "/tmp/mzref"))
CSZOO = str(MZREF / "venv" / "bin" / "cszoo")
ENV = {**os.environ, "PYTHONPATH": str(MZREF / "stubs"), "OMP_NUM_THREADS": "1"}

DATA = HERE / "data"
MSL = 32
VOCAB = 258
DATA_DIR = "@DATA@"  # placeholders in the committed configs: the test fills them in
MODEL_DIR = "@MODEL_DIR@"

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


# ----------------------------------------------------------------------------------------- data
def write_corpus(path: Path, docs: int = 200, seed: int = 0) -> None:
    """Short documents of cyclic Greek-letter words, 10-30 bytes (= tokens), so every document fits in
    one sequence and most VSL samples hold two or more. (A document longer than max_seq_length makes
    ModelZoo 2.10's VSL preprocessing fail: data_reader.py DataFrame.tokenize indexes
    stats_checkpoint_list, one entry per document, by packed sequence: IndexError.)"""
    rnd = random.Random(seed)
    with path.open("w") as f:
        written = 0
        while written < docs:
            k = rnd.randrange(len(WORDS))
            text = " ".join(WORDS[(k + j) % len(WORDS)] for j in range(rnd.randrange(2, 6)))
            if 10 <= len(text) <= 30:
                f.write(json.dumps({"text": text}) + "\n")
                written += 1


def preprocess(out: Path, use_vsl: bool, work: Path) -> None:
    config = {
        "setup": {
            "data": {"source": str(work / "corpus"), "type": "local"},
            "mode": "pretraining",
            "output_dir": str(out),
            "processes": 1,
        },
        "processing": {
            "huggingface_tokenizer": str(DATA / "tokenizer"),
            "max_seq_length": MSL,
            "short_seq_prob": 0.0,
            "write_in_batch": True,
            "resume_from_checkpoint": False,
            "seed": 0,
            "read_hook": "cerebras.modelzoo.data_preparation.data_preprocessing.hooks:text_read_hook",
            "read_hook_kwargs": {"text_key": "text"},
            "shuffle": False,
            "use_ftfy": False,
            "wikitext_detokenize": False,
        },
        "dataset": {"pack_sequences": True, "use_vsl": use_vsl},
    }
    cfg = work / f"preprocess_{'vsl' if use_vsl else 'packed'}.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    if out.exists():
        shutil.rmtree(out)
    run([CSZOO, "data_preprocess", "run", "--config", str(cfg)], work / f"{cfg.stem}.log")
    for junk in ("checkpoint_process_0.txt", "checkpoint_args.json"):
        for p in out.rglob(junk):
            p.unlink()


def make_data(work: Path) -> None:
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    write_corpus(DATA / "corpus.jsonl")
    shutil.copy(DATA / "corpus.jsonl", work / "corpus" / "corpus.jsonl")
    preprocess(DATA / "hdf5", use_vsl=False, work=work)
    preprocess(DATA / "hdf5_vsl", use_vsl=True, work=work)


def run(cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=cwd)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {r.returncode}), see {log}:\n{log.read_text()[-3000:]}")


# ---------------------------------------------------------------------------------------- cases
# Tiny sizes shared by every case. The initializer stds follow each published config's own formula
# (its comments) at these sizes; they only matter for mup_init_std.json, since both sides train from
# ModelZoo's recorded initial weights.
HIDDEN, HEADS, LAYERS, FILTER = 32, 2, 2, 128
BATCH, STEPS = 4, 20


def truncated(std: float) -> dict:
    std = round(std, 9)
    return {"name": "truncated_normal", "mean": 0.0, "std": std, "a": -2 * std, "b": 2 * std}


def published(name: str) -> dict:
    return yaml.safe_load((REFERENCE / name).read_text())


def shrink(cfg: dict, *, data: str = "hdf5", peak_lr: float, warmup: int, decay: int) -> dict:
    """The sizes of `cfg` made tiny, and what a CPU fp32 run of STEPS steps needs; nothing else."""
    cfg = copy.deepcopy(cfg)
    init = cfg["trainer"]["init"]
    init["backend"] = {"backend_type": "CPU"}
    init["model_dir"] = MODEL_DIR
    m = init["model"]
    for legacy in ("fp16_type", "mixed_precision"):  # 2.4-era model keys that 2.10 rejects (precision: below)
        m.pop(legacy, None)
    m.update(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_heads=HEADS, num_hidden_layers=LAYERS, filter_size=FILTER,
        max_position_embeddings=MSL, rotary_dim=HIDDEN // HEADS // 4,  # head_dim * 25%, as published
    )  # fmt: skip
    # The published schedule with its step counts shrunk and its learning rates scaled to `peak_lr`
    # (the published ones, 2e-5 .. 6e-5, hardly move a tiny model in 20 steps); ratios are kept.
    (seq,) = init["schedulers"]
    children = seq["SequentialLR"]["schedulers"]
    scale = peak_lr / children[0]["LinearLR"]["end_learning_rate"]
    for child, iters in zip(children, (warmup, decay), strict=False):  # a trailing ConstantLR has none
        ((_, c),) = child.items()
        c["total_iters"] = iters
    for child in children:
        ((_, c),) = child.items()
        for key in ("initial_learning_rate", "end_learning_rate", "learning_rate"):
            if key in c:
                c[key] = float(f"{c[key] * scale:.6g}")
    prec = init["precision"]
    init["precision"] = {"enabled": False, "max_gradient_norm": prec["max_gradient_norm"]}  # fp32 on CPU
    init["loop"] = {"max_steps": STEPS, "eval_frequency": STEPS}
    init["checkpoint"] = {
        "steps": STEPS,
        "save_initial_checkpoint": True,
    }  # checkpoint_0: the initial weights
    init["logging"] = {"log_steps": 1}
    init["callbacks"] = [{"ComputeNorm": {}}]  # model_wise_grad_norm in the TensorBoard events
    fit = cfg["trainer"]["fit"]
    train = fit["train_dataloader"]
    for key in ("prefetch_factor", "persistent_workers"):
        train.pop(key, None)
    train.update(data_dir=f"{DATA_DIR}/{data}", batch_size=BATCH, num_workers=0)
    fit.pop("val_dataloader", None)  # no evaluation: the goldens are training steps
    cfg["trainer"].pop("validate", None)
    cfg["trainer"].pop("validate_all", None)
    return cfg


def case_gptj_6b() -> dict:
    """(a) params_gptj_6B.yaml: AdamW (betas default 0.9/0.999, eps 1e-6, wd 0.1), warm-up + cosine
    decay + constant, max_gradient_norm 1.0, loss_scaling num_tokens."""
    cfg = shrink(published("params_gptj_6B.yaml"), peak_lr=2e-3, warmup=5, decay=10)
    m = cfg["trainer"]["init"]["model"]
    m["embedding_initializer"] = truncated(round(VOCAB**-0.5, 9))  # 1 / sqrt(vocab_size)
    m["initializer"] = truncated(HIDDEN**-0.5)  # 1 / sqrt(hidden_size)
    m["output_layer_initializer"] = truncated(
        2 / LAYERS / HIDDEN**0.5
    )  # 2 / num_hidden_layers / sqrt(hidden_size)
    return cfg


def case_neox_20b() -> dict:
    """(b) params_gpt_neox_20B.yaml (untied LayerNorms, biases, AdamW betas 0.9/0.95, eps 1e-8, wd 0.01),
    with a linear decay instead of its cosine, `loss_scaling: batch_size` (loss_weight 1/msl, as
    ModelZoo documents for it) and max_gradient_norm 0.3, so clipping acts on every step."""
    cfg = shrink(published("params_gpt_neox_20B.yaml"), peak_lr=3e-3, warmup=4, decay=16)
    init = cfg["trainer"]["init"]
    m = init["model"]
    m["embedding_initializer"] = truncated(round((2 / (5 * HIDDEN)) ** 0.5, 9))  # sqrt(2 / (5 * hidden_size))
    m["initializer"] = truncated(round((2 / (5 * HIDDEN)) ** 0.5, 9))
    m["output_layer_initializer"] = truncated(2 / LAYERS / HIDDEN**0.5)
    m["loss_scaling"] = "batch_size"
    m["loss_weight"] = 1 / MSL
    children = init["schedulers"][0]["SequentialLR"]["schedulers"]
    cosine = children[1].pop("CosineDecayLR")
    children[1]["LinearLR"] = cosine
    init["precision"]["max_gradient_norm"] = 0.3
    return cfg


def case_gptj_mup() -> dict:
    """(c) params_gptj_6B_muP.yaml: the muP keys (base sizes at the published 1/2 width ratio,
    embeddings_scale, output_logits_alpha, attention_logits_alpha, scale_qk_dot_by_d) and ModelZoo's
    per-group learning rates (decoder attention and fc_in / width_mult, fc_out / filter_mult)."""
    cfg = shrink(published("params_gptj_6B_muP.yaml"), peak_lr=2e-3, warmup=5, decay=10)
    m = cfg["trainer"]["init"]["model"]
    m["mup_base_hidden_size"] = HIDDEN // 2  # published: 2048 for 4096
    m["mup_base_filter_size"] = FILTER // 2  # published: 8192 for 16384
    m["embedding_initializer"] = truncated(VOCAB**-0.5)  # 1 / sqrt(vocab_size)
    # NOT the published initializer stds (initializer 1.0, output 2 / num_hidden_layers = 1.0 at two
    # layers), which ModelZoo GPT-J does not scale by width (GPTJModel.__init__ drops
    # scale_initializers_by_dimension's result): from them this 32-wide model is chaotic, a relative
    # 1e-7 change of its initial weights moves the grad norm by up to 3e-3 within 20 steps (in gptx and
    # ModelZoo alike), so no 1e-5 comparison means anything. GPT-J's own stds (1 / sqrt(hidden_size),
    # 2 / num_hidden_layers / sqrt(hidden_size)) keep it well conditioned (the same perturbation:
    # 2e-7); the initializers are not what this case tests (both sides start from checkpoint_0), and
    # mup_init_std.json records the published ones.
    m["initializer"] = truncated(HIDDEN**-0.5)
    m["output_layer_initializer"] = truncated(2 / LAYERS / HIDDEN**0.5)
    return cfg


def case_gptj_vsl() -> dict:
    """(d) params_gptj_6B.yaml with `use_vsl: true` on ModelZoo's VSL data (attention_span, position_ids)."""
    cfg = case_gptj_6b()
    train = cfg["trainer"]["fit"]["train_dataloader"]
    train["data_dir"] = f"{DATA_DIR}/hdf5_vsl"
    train["use_vsl"] = True
    return cfg


def case_gptj_lora() -> dict:
    """(f) params_gptj_6B.yaml with the Lora callback on every Linear and Embedding (target_modules
    null), r 4, alpha 8; AdamW weight_decay 0.1 as published."""
    cfg = case_gptj_6b()
    cfg["trainer"]["init"]["callbacks"].append({"Lora": {"lora_params": {"r": 4, "alpha": 8}}})
    return cfg


# (e) save_initial_checkpoint: every ModelZoo run above saves checkpoint_0 (the initial weights); the
# test runs case gptj_6b twice in gptx, with and without it, and checks gptx's own checkpoint_0.
CASES = {
    "gptj_6b": case_gptj_6b,
    "neox_20b": case_neox_20b,
    "gptj_mup": case_gptj_mup,
    "gptj_vsl": case_gptj_vsl,
    "gptj_lora": case_gptj_lora,
}


# ------------------------------------------------------------------------ ModelZoo -> gptx names
def half_from_interleaved(head_dim: int, rotary_dim: int):
    import torch

    return torch.cat(
        (torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2), torch.arange(rotary_dim, head_dim))
    )


def to_gptx(state: dict, model: dict) -> dict:
    """ModelZoo GPT-J / GPT-NeoX (GPTJModel) state dict -> gptx names, q/k rows in the half rotary layout."""
    import torch

    heads, head_dim = model["num_heads"], model["hidden_size"] // model["num_heads"]
    order = half_from_interleaved(head_dim, model["rotary_dim"])

    def half(t):  # the rows of each q/k head, interleaved rotary pairs -> half split
        rest = t.shape[1:]
        return t.reshape(heads, head_dim, *rest)[:, order].reshape(heads * head_dim, *rest)

    # cstorch.load gives lazily read DeferredTorchTensors (no storage yet): read each one into a plain tensor
    sd = {k.removeprefix("model."): torch.from_numpy(v.numpy().copy()).float() for k, v in state.items()}
    out = {}
    simple = {
        "embedding_layer.word_embeddings": "embed",
        "ln_f": "ln_f",
        "lm_head": "lm_head",
    }
    for mz, gx in simple.items():
        for suffix in ("weight", "bias", "lora_A", "lora_B"):
            if f"{mz}.{suffix}" in sd:
                out[f"{gx}.{suffix}"] = sd.pop(f"{mz}.{suffix}")
    sd.pop("transformer_decoder.norm.weight", None)  # the same tensor as ln_f (TransformerDecoder's norm)
    sd.pop("transformer_decoder.norm.bias", None)
    for layer in range(model["num_hidden_layers"]):
        p = f"transformer_decoder.layers.{layer}."
        g = f"layers.{layer}."
        for mz, gx in (("norm1", "ln_1"), ("norm3", "ln_2"), ("self_attn.proj_output_dense_layer", "attn.out"),
                       ("ffn.ffn.0.linear_layer", "mlp.fc_in"), ("ffn.ffn.1.linear_layer", "mlp.fc_out")):  # fmt: skip
            for suffix in ("weight", "bias", "lora_A", "lora_B"):
                if p + f"{mz}.{suffix}" in sd:
                    out[g + f"{gx}.{suffix}"] = sd.pop(p + f"{mz}.{suffix}")
        attn = p + "self_attn.proj_{}_dense_layer.{}"
        for suffix in ("weight", "bias", "lora_B"):  # output rows: permute q and k
            if attn.format("q", suffix) in sd:
                q, k, v = (sd.pop(attn.format(x, suffix)) for x in "qkv")
                out[g + f"attn.qkv.{suffix}"] = torch.cat((half(q), half(k), v))
        if attn.format("q", "lora_A") in sd:  # input side: no permutation
            out[g + "attn.qkv.lora_A"] = torch.cat([sd.pop(attn.format(x, "lora_A")) for x in "qkv"])
    if sd:
        sys.exit(f"unmapped ModelZoo tensors: {sorted(sd)}")
    return out


# ------------------------------------------------------------------------------------ run a case
def scalars(model_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = glob.glob(str(model_dir / "events" / "*tfevents*"))
    acc = EventAccumulator(events, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def run_case(name: str, cfg: dict, work: Path) -> None:
    import cerebras.pytorch as cstorch
    from safetensors.torch import save_file

    out = HERE / name
    out.mkdir(exist_ok=True)
    text = yaml.safe_dump(cfg, sort_keys=False)
    header = (
        f"# Made by tests/golden/modelzoo/trainer/make_goldens.py ({CASES[name].__name__}) from the published\n"
        f"# ModelZoo config; {DATA_DIR} and {MODEL_DIR} are filled in by the test / the script.\n"
    )
    (out / "config.yaml").write_text(header + text)
    run_dir = work / name
    run_dir.mkdir()
    model_dir = run_dir / "model_dir"
    (run_dir / "config.yaml").write_text(text.replace(DATA_DIR, str(DATA)).replace(MODEL_DIR, str(model_dir)))
    run([CSZOO, "fit", str(run_dir / "config.yaml")], run_dir / "cszoo_fit.log", cwd=run_dir)
    tags = scalars(model_dir)
    lr_tags = sorted((t for t in tags if t.startswith("lr/")), key=lambda t: int(t.split("/")[1]))
    steps = [
        {
            "step": s,
            "loss": tags["loss"][s],
            "lr": [tags[t][s] for t in lr_tags],
            "grad_norm": tags["model_wise_grad_norm"][s],
            "params_norm": tags["model_wise_params_norm"][s],
        }
        for s in range(1, STEPS + 1)
    ]
    model = cfg["trainer"]["init"]["model"]
    init = cstorch.load(str(model_dir / "checkpoint_0.mdl"))
    final = cstorch.load(str(model_dir / f"checkpoint_{STEPS}.mdl"))
    state = init["optimizer"]["state"]  # preinitialized: every parameter's exp_avg exists at step 0
    groups = [
        {k: v for k, v in g.items() if k in ("weight_decay", "betas", "eps", "correct_bias")}
        | {"params": len(g["params"]), "numel": sum(state[i]["exp_avg"].numel() for i in g["params"])}
        for g in init["optimizer"]["param_groups"]
    ]
    save_file(to_gptx(init["model"], model), str(out / "init.safetensors"))
    save_file(to_gptx(final["model"], model), str(out / "final.safetensors"))
    golden = {
        "made_by": "tests/golden/modelzoo/trainer/make_goldens.py: cszoo fit (ModelZoo Release_2.10.0, "
        "cerebras-pytorch 2.10.0, backend CPU, fp32)",
        "case": name,
        "what": CASES[name].__doc__.split("\n\n")[0].strip(),
        "steps": steps,
        "note": "per step: loss, lr of every optimizer param group (lr/<i> in ModelZoo's TensorBoard "
        "events), ComputeNorm's model_wise_grad_norm (before clipping) and model_wise_params_norm "
        "(the weights before the step); init.safetensors = checkpoint_0.mdl, final.safetensors = "
        f"checkpoint_{STEPS}.mdl, both in gptx names",
        "param_groups": groups,  # ModelZoo's optimizer groups (lr: the steps' lr lists, same order)
    }
    (out / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"{name}: loss {steps[0]['loss']:.5f} -> {steps[-1]['loss']:.5f}", flush=True)


# ------------------------------------------------------------------------------ mup_init_std.json
def init_std_models() -> dict[str, dict]:
    """The models of mup_init_std.json: (config, what) per name. The muP ones keep the published muP
    initializers verbatim (initializer std 1.0 truncated at +-2, output_layer_initializer std 2/28,
    embedding std as published), so the rule each model applies to them is what the stds show."""
    mup = shrink(published("params_gptj_6B_muP.yaml"), peak_lr=2e-3, warmup=5, decay=10)
    m = mup["trainer"]["init"]["model"]
    m["mup_base_hidden_size"] = HIDDEN // 2
    m["mup_base_filter_size"] = FILTER // 2
    gpt2 = copy.deepcopy(mup)
    g = gpt2["trainer"]["init"]["model"]
    g["name"] = "gpt2"
    g["dropout_rate"] = g.pop("residual_dropout_rate")  # GPT-2's spelling
    return {
        "gptj": (case_gptj_6b(), "GPT-J, no muP: the gptj_6b case's config (its stds are GPT-J's formulas)"),
        "gptj_mup": (mup, "GPT-J muP: params_gptj_6B_muP.yaml at the tiny sizes, published initializers"),
        "gpt2_mup": (gpt2, "GPT-2 muP: the same model section with name gpt2 (GPT-2 applies muP's scaling)"),
    }


def make_mup_init_std(work: Path) -> None:
    """ModelZoo's per-tensor standard deviation (population, float64) of each freshly initialised model:
    its checkpoint_0.mdl from `save_initial_checkpoint` (cszoo fit, one step), by ModelZoo name."""
    import cerebras.pytorch as cstorch
    import torch

    result: dict = {
        "made_by": "tests/golden/modelzoo/trainer/make_goldens.py: make_mup_init_std (cszoo fit, ModelZoo "
        "Release_2.10.0, backend CPU, seed 1): the std of every tensor of checkpoint_0.mdl "
        "(save_initial_checkpoint), float64, population (correction 0)",
        "note": "GPT-J: GPTJModel.__init__ calls scale_initializers_by_dimension and drops its result, so "
        "its muP stds are the configured ones (no width scaling); GPT-2 (gpt2_model.py) keeps and applies "
        "the scaled initializers. Both initialise lm_head.weight with normal(0, initializer_range) "
        "(their __reset_parameters), whatever the initializers say. Truncated normals: the std "
        "of a normal truncated at +-2 std is 0.8796 std. The transformer_decoder.norm entries are ln_f.",
        "models": {},
    }
    for name, (cfg, what) in init_std_models().items():
        cfg = copy.deepcopy(cfg)
        cfg["trainer"]["init"]["loop"] = {"max_steps": 1}
        cfg["trainer"]["init"]["checkpoint"] = {"steps": 1, "save_initial_checkpoint": True}
        run_dir = work / f"std_{name}"
        run_dir.mkdir()
        model_dir = run_dir / "model_dir"
        text = yaml.safe_dump(cfg, sort_keys=False)
        (run_dir / "config.yaml").write_text(
            text.replace(DATA_DIR, str(DATA)).replace(MODEL_DIR, str(model_dir))
        )
        run([CSZOO, "fit", str(run_dir / "config.yaml")], run_dir / "cszoo_fit.log", cwd=run_dir)
        state = cstorch.load(str(model_dir / "checkpoint_0.mdl"))["model"]
        stds = {}
        for key, v in state.items():
            t = torch.from_numpy(v.numpy().copy()).double()
            stds[key.removeprefix("model.")] = {
                "std": round(t.std(correction=0).item(), 7),
                "numel": t.numel(),
            }
        result["models"][name] = {"what": what, "model": cfg["trainer"]["init"]["model"], "std": stds}
        print(f"init std: {name}: {len(stds)} tensors", flush=True)
    (HERE / "mup_init_std.json").write_text(json.dumps(result, indent=1) + "\n")


def clean_data_dirs() -> None:
    """Drop ModelZoo's side files and the temporary paths from the committed data dirs."""
    for d in (DATA / "hdf5", DATA / "hdf5_vsl"):
        for junk in ("hook.py", "warnings.log"):
            (d / junk).unlink(missing_ok=True)
        params = json.loads((d / "data_params.json").read_text())
        params["setup"]["data"]["source"] = "corpus.jsonl (see make_goldens.py)"
        params["setup"]["output_dir"] = d.name
        params["processing"]["huggingface_tokenizer"] = "../tokenizer"
        (d / "data_params.json").write_text(json.dumps(params, indent=4) + "\n")


if __name__ == "__main__":
    only = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="mzgold-") as tmp:
        work = Path(tmp)
        if not only or "data" in only:
            make_data(work)
            clean_data_dirs()
        for name, make in CASES.items():
            if not only or name in only:
                run_case(name, make(), work)
        if not only or "mup_init_std" in only:
            make_mup_init_std(work)
