"""The generated JSON Schema files as tools read them: a dialect, an identity carrying the
contract version, valid 2020-12 schemas that accept what the service writes."""

from __future__ import annotations

import json

import jsonschema
import pytest

from schemas.export import DIALECT, DIR, MODELS, SCHEMA_VERSION, schema_id
from schemas.inputs import VectorEvent


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_file_names_dialect_identity_and_version(name: str) -> None:
    schema = json.loads((DIR / f"{name}.schema.json").read_text())
    assert schema["$schema"] == DIALECT == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == schema_id(name)
    assert schema["$id"].endswith(f":{name}:v{SCHEMA_VERSION.split('.')[0]}")
    assert schema["version"] == SCHEMA_VERSION
    jsonschema.Draft202012Validator.check_schema(schema)


def test_ids_are_unique() -> None:
    ids = [json.loads((DIR / f"{n}.schema.json").read_text())["$id"] for n in MODELS]
    assert len(set(ids)) == len(ids)


def test_a_message_the_service_accepts_passes_its_schema_file() -> None:
    schema = json.loads((DIR / "vector_event.schema.json").read_text())
    good = {
        "item_id": "v1",
        "embedding_type": "event",
        "embedding_model": "all-mpnet-base-v2",
        "event_time": "2025-12-14T00:00:00Z",
        "vector": [0.6, 0.8],
    }
    VectorEvent.model_validate(good)
    jsonschema.validate(good, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "vector": 3}, schema, cls=jsonschema.Draft202012Validator)
