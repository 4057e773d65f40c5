"""JSON Schema files generated from the models; tests fail when the files drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.inputs import EmbeddedDocument, VectorEvent
from schemas.outputs import Assignment, ChangeEvent, ClusterResult, ReconsolidationRecord

MODELS: dict[str, type[BaseModel]] = {
    "vector_event": VectorEvent,
    "embedded_document": EmbeddedDocument,
    "assignment": Assignment,
    "change_event": ChangeEvent,
    "cluster_result": ClusterResult,
    "reconsolidation_record": ReconsolidationRecord,
}

DIR = Path(__file__).resolve().parent / "json"


def render(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = model.model_json_schema()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(out: Path = DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in MODELS.items():
        path = out / f"{name}.schema.json"
        path.write_text(render(model), encoding="utf-8")
        paths.append(path)
    return paths
