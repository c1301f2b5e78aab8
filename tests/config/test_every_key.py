"""No key silently ignored: every key of every schema (and every v2 preprocessing key) is acted on,
checked, or reported by validate-config as "accepted for ModelZoo compatibility; has no effect in gptx".

The walk reads schemas/*.json itself, so a key added to a schema without a place in config/compat.py
(or a RunSpec field) fails here; every no-effect key is written into a real config and must come back
as a warning at its own line and column; every checked key with another value must be an error."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gptx_cli.config import compat, spec
from gptx_cli.config.legacy import _OPTIMIZER_TO_PRECISION, _RUNCONFIG_MAP, IGNORED_RUNCONFIG_KEYS
from gptx_cli.config.validate import validate_file

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {p.name: json.loads(p.read_text()) for p in (REPO / "schemas").glob("*.schema.json")}
FIELDS = {
    "model": spec.ModelConfig,
    "precision": spec.PrecisionSpec,
    "loop": spec.LoopSpec,
    "checkpoint": spec.CheckpointSpec,
    "logging": spec.LoggingSpec,
    "backend": spec.BackendSpec,
    "data": spec.DataSpec,
}
LOADERS = {"train_dataloader", "val_dataloader", "val_dataloaders"}
# Where sub-keys are read, by a section that is not a RunSpec dataclass.
READERS = {
    "initializer": REPO / "gptx_cli/model/init.py",
    "mixture": REPO / "gptx_cli/data/loader.py",
    "optimizer": REPO / "gptx_cli/train/optim.py",
    "scheduler": REPO / "gptx_cli/train/schedulers.py",
}


def _resolve(node: Any, cur: str) -> tuple[Any, str]:
    while isinstance(node, dict) and "$ref" in node:
        name, _, frag = node["$ref"].partition("#")
        cur = name or cur
        node = SCHEMAS[cur]
        for part in frag.split("/")[1:]:
            node = node[part]
    return node, cur


def schema_keys() -> dict[tuple[str, ...], dict[str, Any]]:
    """Every key path the trainer schema accepts (list items as '*'), with its schema node."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}

    def walk(node: Any, cur: str, path: tuple[str, ...], seen: frozenset[int]) -> None:
        node, cur = _resolve(node, cur)
        if not isinstance(node, dict) or id(node) in seen:
            return
        seen = seen | {id(node)}
        for key, sub in node.get("properties", {}).items():
            out.setdefault(path + (key,), _resolve(sub, cur)[0])
            walk(sub, cur, path + (key,), seen)
        for comb in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(comb, []):
                walk(sub, cur, path, seen)
        if isinstance(node.get("items"), dict):
            walk(node["items"], cur, path + ("*",), seen)

    walk(SCHEMAS["trainer.schema.json"], "trainer.schema.json", (), frozenset())
    return {p: n for p, n in out.items() if "*" not in p[:2]}  # the trainer-list form repeats the same keys


def section_of(path: tuple[str, ...]) -> str:
    parents = [p for p in path[:-1] if p != "*"]
    if parents and parents[-1] == "mixture":
        return "mixture"
    if parents and parents[-1] in LOADERS:
        return "data"
    if len(parents) >= 2 and parents[-2] == "optimizer":
        return "optimizer"
    if parents and parents[-1] == "optimizer":
        return "init"  # an optimizer name
    if "schedulers" in parents and parents[-1] != "schedulers":
        return "scheduler"
    if len(parents) >= 2 and parents[-2] == "model" and parents[-1].endswith("initializer"):
        return "initializer"
    return parents[-1] if parents else "trainer"


def factory_parameters(section: str, name: str) -> set[str]:
    """The keyword arguments gptx's optimizer / scheduler for `name` takes (the config passes its keys)."""
    import inspect

    from gptx_cli.config.build import canonical_optimizer_name
    from gptx_cli.train import optim, schedulers

    if section == "optimizer":
        factory = optim._OPTIMIZERS[canonical_optimizer_name(name)]
        extra = {"learning_rate", "lr"}  # optim.optimizer_learning_rate
    elif name == "SequentialLR":
        return {"schedulers", "milestones"}  # config/build.py and schedulers._build_one
    else:
        factory, extra = schedulers._FACTORIES[name], set()
    names = set(inspect.signature(factory).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()):
        # **kwargs go on: a class to its base classes (gptx's SGD -> torch's SGD), Adam to AdamW
        targets = factory.__mro__[1:] if inspect.isclass(factory) else (optim.AdamW,)
        for target in targets:
            if target is not object:
                names |= set(inspect.signature(target).parameters)
    return names | extra


def classify(path: tuple[str, ...]) -> list[str]:
    section, key = section_of(path), path[-1]
    found = []
    if section in FIELDS and key in {f.name for f in dataclasses.fields(FIELDS[section])}:
        found.append("RunSpec field")
    for name, table in (
        ("acted", compat.ACTED),
        ("checked", compat.CHECKED),
        ("no effect", compat.NO_EFFECT),
    ):
        if (section, key) in table:
            found.append(name)
    if section in ("initializer", "mixture") and f'"{key}"' in READERS[section].read_text():
        found.append(f"read in {READERS[section].name}")
    if section in ("optimizer", "scheduler") and key in factory_parameters(section, path[-2]):
        found.append("a keyword argument of the optimizer / scheduler")
    if (section == "init" and key in _names("optimizer")) or (
        section == "schedulers" and key in _names("scheduler")
    ):
        found.append("a name config/build.py resolves")
    if path == ("trainer",):
        found.append("the root")
    return found


def _names(section: str) -> set[str]:
    if section == "optimizer":
        return set(SCHEMAS["optimizer.schema.json"]["properties"])
    return {k for k in SCHEMAS["schedulers.schema.json"]["$defs"] if k != "scheduler"}


def test_every_trainer_schema_key_is_acted_on_checked_or_warned():
    keys = schema_keys()
    assert len(keys) > 150  # the walk reaches model, data, optimizer and scheduler keys
    unplaced = []
    for path in keys:
        if not classify(path):
            unplaced.append(".".join(path))
    assert not unplaced, f"keys with no place in config/compat.py or the RunSpec: {unplaced}"
    for table in (compat.NO_EFFECT, compat.CHECKED, compat.ACTED):
        for section, key in table:
            if section == "legacy":
                continue
            others = [t for t in (compat.NO_EFFECT, compat.CHECKED, compat.ACTED) if t is not table]
            assert all((section, key) not in t for t in others), (section, key)


def test_every_legacy_key_is_converted_or_warned(tmp_path, modelzoo_configs_dir):
    legacy = SCHEMAS["legacy.schema.json"]["properties"]
    runconfig = legacy["runconfig"]["properties"]
    for key in runconfig:
        assert key in _RUNCONFIG_MAP or key in IGNORED_RUNCONFIG_KEYS or key == "checkpoint_path", key
    converter = (REPO / "gptx_cli/config/legacy.py").read_text()
    refused = []
    for key in legacy["optimizer"]["properties"]:
        if key not in _OPTIMIZER_TO_PRECISION and f'"{key}"' not in converter:
            refused.append(key)
    # A legacy optimizer key the conversion does not map stays an optimizer argument the schema refuses.
    assert refused == ["learning_rate_scaling"]
    cfg = yaml.safe_load((modelzoo_configs_dir / "params_gptj_6B_r2.3.1.yaml").read_text())
    cfg["optimizer"]["learning_rate_scaling"] = 1.0
    cfg["wandb"] = {"project": "p"}
    cfg["runconfig"]["num_act_servers"] = 2
    cfg["runconfig"]["retrace_every_iteration"] = True
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = validate_file(tmp_path / "l.yaml", check_paths=False)
    assert any("learning_rate_scaling" in e.path for e in result.errors), [e.format() for e in result.errors]
    warned = {w.path: w.message for w in result.warnings}
    assert warned["wandb"] == compat.no_effect_message("legacy", "wandb")
    assert warned["runconfig.retrace_every_iteration"].startswith(compat.NO_EFFECT_PREFIX)
    assert warned["runconfig.num_act_servers"] == compat.no_effect_message("backend", "cluster_config")
    assert all(w.line != 1 for w in result.warnings)  # each at the key the file holds
    assert set(legacy) <= {
        "train_input",
        "eval_input",
        "model",
        "optimizer",
        "runconfig",
        "sparsity",
        "wandb",
    }


def _sample(node: dict[str, Any]) -> Any:
    if "default" in node and node["default"] is not None:
        return node["default"]
    if "enum" in node:
        return node["enum"][0]
    for sub in node.get("anyOf", []):
        return _sample(sub)
    kind = node.get("type", "string")
    kind = kind[0] if isinstance(kind, list) else kind
    return {"boolean": True, "integer": 1, "number": 1.0, "string": "x", "object": {}, "array": []}[kind]


def _base_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "configs" / "tiny_gptj.yaml").read_text())


NO_EFFECT_TRAINER = [(s, k) for s, k in compat.NO_EFFECT if s != "legacy"]


@pytest.mark.parametrize(
    ("section", "key"), NO_EFFECT_TRAINER, ids=[f"{s}.{k}" for s, k in NO_EFFECT_TRAINER]
)
def test_a_no_effect_key_is_a_warning_at_its_line(tmp_path, section, key):
    cfg = _base_config()
    init = cfg["trainer"]["init"]
    keys = schema_keys()
    if section == "data":
        parent, where = cfg["trainer"]["fit"]["train_dataloader"], ("trainer", "fit", "train_dataloader")
    elif section == "validate_all":
        cfg["trainer"]["validate_all"] = cfg["trainer"].get("validate_all") or {}
        parent, where = cfg["trainer"]["validate_all"], ("trainer", "validate_all")
    elif section == "init":
        parent, where = init, ("trainer", "init")
    else:
        parent, where = init.setdefault(section, {}), ("trainer", "init", section)
    parent[key] = _sample(keys[where + (key,)])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = validate_file(path, check_paths=False)
    assert result.valid, [p.format() for p in result.errors]
    (w,) = [w for w in result.warnings if w.path.endswith(f".{key}")]
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith(f"{key}:"))
    assert (w.line, w.severity) == (line, "warning")
    assert w.message == compat.no_effect_message(section, key)
    assert w.message.startswith("accepted for ModelZoo compatibility; has no effect in gptx: ")


CHECKED_VALUES = {
    ("init", "sparsity"): {"type": "gmp"},
    ("loop", "num_epochs"): 2,
    ("loop", "steps_per_epoch"): 2,
    ("model", "embedding_layer_norm"): True,
    ("model", "attention_module"): "multiquery_attention",
    ("model", "attention_sliding_window_length"): 8,
    ("model", "pos_scaling_factor"): 2.0,
    ("model", "alibi_trainable_slopes"): True,
    ("model", "extra_attention_params"): {"num_kv_groups": 2},
    ("model", "norm_type"): "rmsnorm",
    ("data", "dataset_map_fn"): "my.fn",
}


@pytest.mark.parametrize(
    ("section", "key"), list(compat.CHECKED), ids=[f"{s}.{k}" for s, k in compat.CHECKED]
)
def test_a_checked_key_with_another_value_is_an_error(tmp_path, section, key):
    cfg = _base_config()
    init = cfg["trainer"]["init"]
    parent = (
        cfg["trainer"]["fit"]["train_dataloader"] if section == "data" else init if section == "init"
        else init.setdefault(section, {})
    )  # fmt: skip
    parent[key] = copy.deepcopy(CHECKED_VALUES[(section, key)])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = validate_file(path, check_paths=False)
    assert any(key in e.path or key in e.message for e in result.errors), [e.format() for e in result.errors]


def test_validate_config_json_carries_the_warnings(tmp_path, gptx):
    cfg = _base_config()
    cfg["trainer"]["init"]["backend"] = {"backend_type": "CPU", "compile_dir": "/tmp/cs"}
    cfg["trainer"]["init"]["callbacks"] = [{"ComputeNorm": {}}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = gptx("validate-config", "--format", "json", "c.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (warning,) = [w for w in json.loads(res.stdout)["files"][0]["warnings"] if "compile_dir" in w["path"]]
    assert warning["path"] == "trainer.init.backend.compile_dir" and warning["line"] and warning["col"]
    assert warning["message"] == compat.no_effect_message("backend", "compile_dir")
    res = gptx("validate-config", "c.yaml", cwd=tmp_path)
    assert (
        "c.yaml:" in res.stdout
        and "warning: trainer.init.backend.compile_dir: accepted for ModelZoo" in res.stdout
    )
