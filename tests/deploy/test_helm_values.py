"""The chart's values.schema.json against the code it configures: the engine keys it
accepts are exactly EngineConfig's, with their types, and the chart's defaults pass it."""

from __future__ import annotations

import dataclasses
import json
import re
import typing

import jsonschema
import pytest
import yaml

from processors.config import EngineConfig
from tests.conftest import ROOT

CHART = ROOT / "helm" / "clusterer"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
ENGINE = SCHEMA["properties"]["engine"]["properties"]


def test_engine_keys_and_types_match_engine_config() -> None:
    hints = typing.get_type_hints(EngineConfig)
    fields = {f.name for f in dataclasses.fields(EngineConfig) if f.name != "extra"}
    assert set(ENGINE) == fields
    assert SCHEMA["properties"]["engine"]["additionalProperties"] is False
    for name in fields:
        kind = hints[name]
        expected = {float: "number", int: "integer", str: "string"}.get(kind, "array")
        assert expected in ENGINE[name]["type"], name


@pytest.mark.parametrize(
    ("key", "text", "ok"),
    [
        ("assign_threshold", "0.6", True),
        ("assign_threshold", "1e-3", True),
        ("assign_threshold", "-2", True),
        ("assign_threshold", ".5", False),  # not a TOML number
        ("assign_threshold", "0.6x", False),
        ("tick_items", "2048", True),
        ("tick_items", "1.5", False),
        ("tick_items", "007", False),
    ],
)
def test_numeric_text_from_set_is_accepted_only_where_toml_reads_a_number(
    key: str, text: str, ok: bool
) -> None:
    assert bool(re.fullmatch(ENGINE[key]["pattern"].strip("^$"), text)) is ok


def test_default_values_pass_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**values, "engine": {"assign_treshold": 0.6}}, SCHEMA)
