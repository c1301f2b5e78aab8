"""Every published ModelZoo config and every config in configs/ validates unchanged (exit 0)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gptx_testing import run_gptx, shared_path

from gptx_cli.config.load import load_yaml

REPO = Path(__file__).resolve().parents[2]
OWN = sorted((REPO / "configs").glob("*.yaml"))


def test_published_and_own_configs_validate_with_exit_0(modelzoo_configs_dir):
    published = sorted(modelzoo_configs_dir.glob("*.yaml"))
    assert len(published) == 5 and any("r2.3.1" in p.name for p in published)  # the legacy one too
    res = run_gptx("validate-config", *map(str, published + OWN))
    assert res.returncode == 0, res.stdout + res.stderr
    for path in published + OWN:
        assert f"{path}: ok" in res.stdout.splitlines()
    assert res.stdout.splitlines()[-1].startswith(
        f"{len(published) + len(OWN)} config(s): {len(published) + len(OWN)} valid"
    )


def test_no_argument_validates_configs_dir_and_json_is_one_document():
    res = run_gptx("validate-config", "--format", "json", cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["valid"] is True and doc["exit_code"] == 0
    assert sorted(f["file"] for f in doc["files"]) == sorted(f"configs/{p.name}" for p in OWN)
    for f in doc["files"]:
        assert f["valid"] and f["errors"] == []
        assert all({"line", "col", "path", "message"} <= set(w) for w in f["warnings"])


def test_own_configs_hold_the_published_values_in_their_own_files():
    for name in ["params_gptj_6B", "params_gptj_6B_muP", "params_gptj_6B_TRC2", "params_gpt_neox_20B"]:
        ours = REPO / "configs" / f"{name}.yaml"
        published = shared_path("reference", "modelzoo-configs", f"{name}.yaml")
        assert load_yaml(ours).data == load_yaml(published).data, name
        assert ours.read_text() != published.read_text()


def test_summary_prints_exact_counts():
    res = run_gptx(
        "validate-config",
        "--summary",
        str(REPO / "configs/params_gptj_6B_TRC2.yaml"),
        str(REPO / "configs/params_gpt_neox_20B.yaml"),
    )
    assert res.returncode == 0
    assert "6,050,882,784 parameters" in res.stdout
    assert "20,552,663,040 parameters" in res.stdout
    assert "gpt-neox architecture" in res.stdout
    assert "training FLOPs/token at seq_len 512" in res.stdout
    assert "optimizer state" in res.stdout and "activations" in res.stdout


def test_missing_data_dir_is_a_warning_and_an_error_with_strict_paths(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    shutil.copy(REPO / "configs" / "tiny_gptj.yaml", cfg)
    res = run_gptx("validate-config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0
    assert "warning: trainer.fit.train_dataloader.data_dir: data directory" in res.stdout
    strict = run_gptx("validate-config", "--strict-paths", str(cfg), cwd=tmp_path)
    assert strict.returncode == 1
    assert f"{cfg}:87:7: trainer.fit.train_dataloader.data_dir: data directory" in strict.stdout
    for d in ("train_msl128", "val_msl128"):
        (tmp_path / "language" / "datasets" / "tiny" / d).mkdir(parents=True)
    ok = run_gptx("validate-config", "--strict_paths", str(cfg), cwd=tmp_path)
    assert ok.returncode == 0 and "warning:" not in ok.stdout and "0 warning(s)" in ok.stdout


def test_unreadable_file_is_a_usage_error_with_exit_2(tmp_path):
    res = run_gptx("validate-config", str(REPO / "configs/tiny_gptj.yaml"), str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    assert f"error: {tmp_path / 'missing.yaml'}: no such file" in res.stderr
    assert "Traceback" not in res.stderr
    assert run_gptx("validate-config", str(tmp_path)).returncode == 2
    assert (
        run_gptx("validate-config", "--format", "xml", str(REPO / "configs/tiny_gptj.yaml")).returncode == 2
    )


def test_no_configs_dir_is_a_usage_error(tmp_path):
    res = run_gptx("validate-config", cwd=tmp_path)
    assert res.returncode == 2 and "no *.yaml" in res.stderr, (res.returncode, res.stdout, res.stderr)


def test_override_problem_names_the_override(tmp_path):
    res = run_gptx("validate-config", "--set", "model.num_heads=5", str(REPO / "configs/tiny_gptj.yaml"))
    assert res.returncode == 1
    assert (
        "override 'model.num_heads=5': trainer.init.model.num_heads: hidden_size 64 is not divisible"
        in res.stdout
    )
