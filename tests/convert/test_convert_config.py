"""`gptx convert config`: HF config.json <-> ModelZoo model section, legacy <-> trainer layout."""

from __future__ import annotations

import json

import pytest
import yaml
from gptx_testing import run_gptx, shared_path

from gptx_cli.config import load_run_spec
from gptx_cli.config.legacy import convert_legacy, trainer_to_legacy
from gptx_cli.config.load import load_yaml
from gptx_cli.convert.config import convert_config
from gptx_cli.errors import ConfigError
from gptx_cli.model.hf import hf_config_from_model_config, model_config_from_hf

HF_CONFIGS = {
    # GPT-J 6B's published config.json (n_inner null, gelu_new, rotary_dim 64)
    "gptj": {
        "architectures": ["GPTJForCausalLM"],
        "model_type": "gptj",
        "vocab_size": 50400,
        "n_embd": 4096,
        "n_layer": 28,
        "n_head": 16,
        "n_inner": None,
        "n_positions": 2048,
        "rotary_dim": 64,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    },
    # GPT-NeoX 20B's published config.json (rotary_pct 0.25, untied LayerNorms, parallel residual)
    "gpt-neox": {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": 50432,
        "hidden_size": 6144,
        "num_hidden_layers": 44,
        "num_attention_heads": 64,
        "intermediate_size": 24576,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "hidden_act": "gelu_fast",
        "layer_norm_eps": 1e-5,
        "use_parallel_residual": True,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
}


@pytest.mark.parametrize("family", list(HF_CONFIGS))
def test_hf_to_trainer_and_back_keeps_the_model(tmp_path, family):
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIGS[family]))
    trainer, _ = convert_config(
        tmp_path / "config.json", src_fmt="hf", tgt_fmt="trainer", output=tmp_path / "t.yaml"
    )
    model = yaml.safe_load(trainer.read_text())["trainer"]["init"]["model"]
    expected = model_config_from_hf(HF_CONFIGS[family])
    assert model["name"] == family and "embeddings_scale" not in model
    assert load_run_spec(trainer).model == expected
    back, _ = convert_config(trainer, src_fmt="trainer", tgt_fmt="hf", output_dir=tmp_path / "hf")
    assert back == tmp_path / "hf" / "config.json"
    assert model_config_from_hf(json.loads(back.read_text())) == expected
    assert json.loads(back.read_text()) == hf_config_from_model_config(expected, family)


def test_hf_to_trainer_and_legacy_output_validates(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIGS["gpt-neox"]))
    res = run_gptx("convert", "config", str(tmp_path), "--src-fmt", "hf", "--tgt-fmt", "trainer")
    assert res.returncode == 0, res.stderr
    written = tmp_path / f"{tmp_path.name}_trainer.yaml"  # next to config.json, named after its directory
    assert res.stdout.strip() == f"wrote {written}"
    res = run_gptx(
        "convert",
        "config",
        str(tmp_path / "config.json"),
        "--src-fmt",
        "hf",
        "--tgt-fmt",
        "legacy",
        "-o",
        str(tmp_path / "legacy.yaml"),
    )
    assert res.returncode == 0, res.stderr
    res = run_gptx("validate-config", str(written), str(tmp_path / "legacy.yaml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 valid" in res.stdout


def test_legacy_to_trainer_writes_v2_and_matches_modelzoo_conversion(tmp_path):
    legacy = shared_path("reference", "modelzoo-configs", "params_gptj_6B_r2.3.1.yaml")
    src = tmp_path / legacy.name
    src.write_text(legacy.read_text())
    res = run_gptx("convert", "config", str(src), "--src-fmt", "legacy", "--tgt-fmt", "trainer")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "params_gptj_6B_r2.3.1_v2.yaml"
    assert yaml.safe_load(out.read_text()) == convert_legacy(load_yaml(src).data).data
    res = run_gptx("validate-config", str(out))
    assert res.returncode == 0, res.stdout + res.stderr


def test_trainer_to_legacy_inverts_convert_legacy():
    legacy = load_yaml(shared_path("reference", "modelzoo-configs", "params_gptj_6B_r2.3.1.yaml")).data
    trainer = convert_legacy(legacy).data
    back, notes = trainer_to_legacy(trainer)
    assert notes == []
    assert convert_legacy(back).data == trainer


def test_trainer_to_legacy_on_published_trainer_config_round_trips(tmp_path):
    published = shared_path("reference", "modelzoo-configs", "params_gptj_6B.yaml")
    out, notes = convert_config(
        published, src_fmt="trainer", tgt_fmt="legacy", output=tmp_path / "legacy.yaml"
    )
    legacy = yaml.safe_load(out.read_text())
    assert legacy["model"]["hidden_size"] == 4096 and legacy["optimizer"]["optimizer_type"].lower() == "adamw"
    assert load_run_spec(out).model == load_run_spec(published).model
    assert load_run_spec(out).schedulers == load_run_spec(published).schedulers
    assert all("no legacy equivalent" in n for n in notes)


def test_wrong_layout_and_muP_to_hf_are_errors(tmp_path):
    published = shared_path("reference", "modelzoo-configs", "params_gptj_6B_muP.yaml")
    with pytest.raises(ConfigError, match="--src-fmt legacy but the file is in the trainer layout"):
        convert_config(published, src_fmt="legacy", tgt_fmt="trainer", output=tmp_path / "x.yaml")
    with pytest.raises(
        ConfigError, match=r"params_gptj_6B_muP\.yaml: model\.mup_base_hidden_size: muP multipliers"
    ):
        convert_config(published, src_fmt="trainer", tgt_fmt="hf", output=tmp_path / "config.json")
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "config.json").exists()
