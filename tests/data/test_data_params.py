"""One answer to "what data is this" (`gptx_cli.data.params`): the tokenizer, msl, mode and statistics of
any directory a config names, the Pile's part directories included; train records that tokenizer, so
`gptx convert --tgt-fmt hf` of a model trained on the Pile layout carries it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from datagen import make_pile
from gptx_testing import REPO, run_gptx, shared_path

from gptx_cli.data.params import data_params, tokenizer_of
from gptx_cli.data.tokenizer import load_tokenizer

MSL = 32
GOLDEN = REPO / "tests/golden/modelzoo"


def _pile(tmp_path: Path, documents: list[str], env: dict[str, str]) -> Path:
    make_pile(tmp_path / "pile", [documents[:20], documents[20:]], documents[5:25])
    res = run_gptx(
        "preprocess", "--dataset", "pile", "--input-dir", "pile", "--max-seq-length", str(MSL),
        "--samples-per-file", "4", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return tmp_path / "language/datasets/pile_original/hdf5_dataset"


def test_a_part_directory_is_described_by_its_splits_data_params(tmp_path, documents, tokenizer_env) -> None:
    base = _pile(tmp_path, documents, tokenizer_env)
    split = base / f"train_shuffled_msl{MSL}"
    assert not (split / "3" / "data_params.json").exists()  # the layout: one file for the ten parts
    for where in (split, split / "3", next((split / "3").glob("*.h5"))):
        params = data_params(where)
        assert params is not None and params.path == split / "data_params.json", where
        assert params.max_seq_length == MSL and params.mode == "pretraining" and not params.use_vsl
        assert (
            params.statistics["n_examples"]
            == json.loads(params.path.read_text())["post-process"]["n_examples"]
        )
    recorded = tokenizer_of([split / str(i) for i in range(10)])
    assert recorded is not None and load_tokenizer(recorded).name == "gpt2"
    assert data_params(tmp_path / "pile") is None and tokenizer_of([tmp_path / "pile"]) is None


def test_modelzoo_data_params_name_their_tokenizer(tmp_path) -> None:
    # ModelZoo's own data_params.json: processing.huggingface_tokenizer, or a GPT-2 file pair.
    hf = tmp_path / "hf"
    shutil.copytree(GOLDEN / "trainer/data/hdf5", hf / "data")
    params = data_params(hf / "data")
    assert params is not None and params.tokenizer == "../tokenizer" and params.max_seq_length == 32
    (hf / "tokenizer").mkdir()
    assert data_params(hf / "data").tokenizer == str(hf / "data" / "../tokenizer")  # found beside it
    vsl = tmp_path / "vsl"
    vsl.mkdir()
    raw = json.loads((GOLDEN / "preprocess/cases/vsl/out/data_params.json").read_text())
    gpt2 = shared_path("assets", "tokenizers", "gpt2")
    raw["processing"]["tokenizer_params"] = {
        "encoder_file": str(gpt2 / "gpt2-encoder.json"),
        "vocab_file": str(gpt2 / "gpt2-vocab.bpe"),
    }
    (vsl / "data_params.json").write_text(json.dumps(raw))
    params = data_params(vsl)
    assert params is not None and params.use_vsl and params.mode == "pretraining"
    assert params.statistics["vsl_packing_factor"] == 3.88
    assert load_tokenizer(params.tokenizer).encode("Hello world") == [15496, 995]


def test_trained_on_the_pile_layout_the_hf_export_carries_the_tokenizer(
    tmp_path, documents, tokenizer_env
) -> None:
    base = _pile(tmp_path, documents, tokenizer_env)
    config = yaml.safe_load((REPO / "configs" / "tiny_gptj.yaml").read_text())
    init, fit = config["trainer"]["init"], config["trainer"]["fit"]
    init["model"].update(hidden_size=32, num_heads=2, filter_size=64, max_position_embeddings=MSL)
    init["model_dir"] = str(tmp_path / "model_dir")
    init["loop"].update(max_steps=2, eval_frequency=None)
    init["checkpoint"] = {"steps": 2}
    # as the published configs name it: the ten part directories
    fit["train_dataloader"]["data_dir"] = [str(base / f"train_shuffled_msl{MSL}" / str(i)) for i in range(10)]
    fit["val_dataloader"]["data_dir"] = str(base / f"val_msl{MSL}")
    fit["train_dataloader"]["batch_size"] = 2
    (tmp_path / "pile.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    res = run_gptx("train", str(tmp_path / "pile.yaml"), cwd=tmp_path, env=tokenizer_env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    checkpoint = tmp_path / "model_dir" / "checkpoint_2"
    assert json.loads((checkpoint / "gptx.json").read_text())["tokenizer"]  # train recorded it

    res = run_gptx(
        "convert", "checkpoint", str(checkpoint), "--tgt-fmt", "hf", "--output-dir", str(tmp_path / "hf"),
        "--no-progress", env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "no tokenizer" not in res.stderr, res.stderr
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "hf" / name).is_file(), name
    exported = load_tokenizer(tmp_path / "hf" / "tokenizer.json")
    reference = load_tokenizer("gpt2", tokenizer_dir=tokenizer_env["GPTX_TOKENIZER_DIR"])
    assert exported.encode(documents[3]) == reference.encode(documents[3])
    # and the export, on its own, is a model gptx generate opens with that tokenizer
    res = run_gptx(
        "generate", "--checkpoint-path", str(tmp_path / "hf"), "--prompt", "Hello", "--max-new-tokens", "2",
        "--device", "cpu", env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr

    # a checkpoint that records no tokenizer (written by hand, or before part directories were read):
    # the export takes the one recorded for the data its config.yaml names
    meta = json.loads((checkpoint / "gptx.json").read_text())
    (checkpoint / "gptx.json").write_text(json.dumps({**meta, "tokenizer": None}))
    res = run_gptx(
        "convert", "checkpoint", str(checkpoint), "--tgt-fmt", "hf", "--output-dir", str(tmp_path / "hf2"),
        "--no-progress", env=tokenizer_env, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0 and "no tokenizer" not in res.stderr, res.stderr
    assert load_tokenizer(tmp_path / "hf2" / "tokenizer.json").encode(documents[3]) == reference.encode(
        documents[3]
    )


def test_a_tokenizer_trained_into_the_output_is_found_from_any_directory(tmp_path, documents) -> None:
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    res = run_gptx(
        "preprocess", "--input", "docs.jsonl", "--output-dir", "out", "--max-seq-length", str(MSL),
        "--train-tokenizer", "300", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    recorded = json.loads((tmp_path / "out" / "data_params.json").read_text())["gptx"]["processing"][
        "tokenizer"
    ]
    assert not Path(recorded).is_absolute()  # relative to the preprocess's working directory
    found = tokenizer_of([tmp_path / "out"])  # asked from this one: found beside the data_params.json
    assert found is not None and Path(found).resolve() == (tmp_path / "out" / "tokenizer.json").resolve()
    assert load_tokenizer(found).vocab_size == 300
