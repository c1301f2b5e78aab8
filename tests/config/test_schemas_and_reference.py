"""The JSON Schemas are valid Draft 2020-12, agree with the code that consumes them, and the
generated docs/config-reference.md is up to date."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from gptx_cli.config.legacy import RUNCONFIG_KEYS
from gptx_cli.config.schemas import data_processor_names, load_schemas
from gptx_cli.config.spec import DataSpec, ModelConfig

REPO = Path(__file__).resolve().parents[2]


def test_every_schema_is_valid_draft_2020_12():
    schemas = load_schemas()
    assert set(schemas) == {
        "trainer.schema.json",
        "legacy.schema.json",
        "model.schema.json",
        "data.schema.json",
        "optimizer.schema.json",
        "schedulers.schema.json",
    }
    for schema in schemas.values():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_every_model_config_field_is_a_schema_key():
    props = load_schemas()["model.schema.json"]["properties"]
    assert {f.name for f in dataclasses.fields(ModelConfig)} <= set(props)


def test_every_data_spec_field_is_a_schema_key():
    props = load_schemas()["data.schema.json"]["properties"]
    assert {f.name for f in dataclasses.fields(DataSpec)} - {"extra"} <= set(props)
    names = data_processor_names()
    assert {"GptHDF5MapDataProcessor", "GptHDF5DataProcessor"} <= set(names)
    assert names == load_schemas()["data.schema.json"]["$defs"]["data_processor"]["enum"]


def test_legacy_runconfig_keys_match_the_legacy_schema():
    props = load_schemas()["legacy.schema.json"]["properties"]["runconfig"]["properties"]
    assert set(props) == set(RUNCONFIG_KEYS)


def test_config_reference_is_generated_and_fresh():
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    text = (REPO / "docs" / "config-reference.md").read_text()
    for anchor in ("## model", "## data loader", "### AdamW", "### CosineDecayLR", "## Legacy layout"):
        assert anchor in text


def test_model_defaults_come_from_one_place():
    """schemas/model.schema.json's defaults (what a YAML file that leaves a key out gets, and what
    docs/config-reference.md shows) are ModelConfig's defaults (what the Python API gets)."""
    import dataclasses

    from gptx_cli.config.spec import ModelConfig

    props = load_schemas()["model.schema.json"]["properties"]
    fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    in_schema = {k: p["default"] for k, p in props.items() if "default" in p and k in fields}
    assert in_schema == {k: fields[k] for k in in_schema}
    # every field with a value default states it in the schema too (None means "derived" / "unset")
    assert {k for k, v in fields.items() if v is not None} <= set(in_schema)
