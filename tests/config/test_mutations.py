"""Property test: mutated published configs never end in a traceback, only in exit 0 or 1 with messages."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from gptx_testing import run_gptx, shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptx_cli.commands.validate_config import exit_code, render_json, render_text, validate_paths
from gptx_cli.config.load import load_yaml

REPO = Path(__file__).resolve().parents[2]
SOURCES = [
    "params_gptj_6B.yaml",
    "params_gptj_6B_muP.yaml",
    "params_gptj_6B_TRC2.yaml",
    "params_gpt_neox_20B.yaml",
    "params_gptj_6B_r2.3.1.yaml",
]

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _base(name: str) -> Any:
    return load_yaml(shared_path("reference", "modelzoo-configs", name)).data


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


@st.composite
def mutated_config(draw: Any) -> Any:
    doc = copy.deepcopy(_base(draw(st.sampled_from(SOURCES))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(doc, path), path[-1]
        op = draw(st.sampled_from(["delete", "rename", "retype", "swap"]))
        if op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            parent[str(key)[:-1] + draw(st.sampled_from(["", "s", "_", "x"]))] = parent.pop(key)
        elif op == "retype":
            parent[key] = draw(VALUES)
        elif op == "swap":
            other = draw(st.sampled_from(paths))
            try:
                other_parent = _parent(doc, other)
                parent[key], other_parent[other[-1]] = other_parent[other[-1]], parent[key]
            except (KeyError, IndexError, TypeError):
                pass  # the other path moved with an earlier mutation: nothing to swap
    return doc


def _check(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.yaml"
        path.write_text(text, encoding="utf-8")
        reports = validate_paths([path], summary=True)
        code = exit_code(reports)
        assert code in (0, 1)
        (report,) = reports
        assert report.result is not None
        if code == 1:
            assert report.result.errors and all(p.message for p in report.result.errors)
        out, _ = render_text(reports)
        assert out.strip()
        json.loads(render_json(reports))


@SETTINGS
@given(mutated_config())
def test_mutated_configs_end_in_exit_0_or_1_with_messages(doc):
    _check(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("abc: -[]{}&*!|>'\"#\n\t 0129.e")), max_size=80))
def test_random_yaml_text_ends_in_exit_0_or_1(text):
    _check(text)


def test_cli_on_a_batch_of_mutants_never_shows_a_traceback(tmp_path):
    # A fixed handful through the real CLI (the property tests above call the same library function).
    base = _base("params_gptj_6B.yaml")
    mutants = []
    for key, value in [
        ("hidden_size", "x"),
        ("num_heads", None),
        ("rotary_dim", [1]),
        ("vocab_size", {"a": 1}),
    ]:
        doc = copy.deepcopy(base)
        doc["trainer"]["init"]["model"][key] = value
        mutants.append(doc)
    doc = copy.deepcopy(base)
    doc["trainer"]["init"] = []
    mutants.append(doc)
    doc = copy.deepcopy(base)
    doc["trainer"]["fit"]["train_dataloader"]["data_dir"] = [1, None]
    mutants.append(doc)
    paths = []
    for i, doc in enumerate(mutants):
        p = tmp_path / f"m{i}.yaml"
        p.write_text(yaml.safe_dump(doc))
        paths.append(str(p))
    (tmp_path / "junk.yaml").write_text("trainer: [\n")
    res = run_gptx("validate-config", *paths, str(tmp_path / "junk.yaml"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert res.stdout.count(": invalid (") == len(paths) + 1
