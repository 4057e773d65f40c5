"""JSON Schema files generated from the models; tests fail when the files drift.

Each file names its dialect (`$schema`), its identity (`$id`, which carries the contract
version) and the `version` of the contract set, so tools (schema registries, code
generators, the AsyncAPI document in deploy/asyncapi/) can tell versions apart. Bump
SCHEMA_VERSION with the models: the major part when a change breaks readers (a field removed,
renamed or retyped, a new required field), the minor part when it only adds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.inputs import EmbeddedDocument, VectorEvent
from schemas.outputs import Assignment, ChangeEvent, ClusterResult, ReconsolidationRecord

SCHEMA_VERSION = "1.0.0"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

MODELS: dict[str, type[BaseModel]] = {
    "vector_event": VectorEvent,
    "embedded_document": EmbeddedDocument,
    "assignment": Assignment,
    "change_event": ChangeEvent,
    "cluster_result": ClusterResult,
    "reconsolidation_record": ReconsolidationRecord,
}

DIR = Path(__file__).resolve().parent / "json"


def schema_id(name: str) -> str:
    """A URN rather than a URL: nothing is served at an address; the major version is
    part of the identity because a new major version is a different contract."""
    return f"urn:stage4-clusterer:schema:{name}:v{SCHEMA_VERSION.split('.')[0]}"


def render(model: type[BaseModel]) -> str:
    name = next(k for k, v in MODELS.items() if v is model)
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": schema_id(name),
        "version": SCHEMA_VERSION,
        **model.model_json_schema(),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(out: Path = DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in MODELS.items():
        path = out / f"{name}.schema.json"
        path.write_text(render(model), encoding="utf-8")
        paths.append(path)
    return paths
