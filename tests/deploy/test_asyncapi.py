"""The AsyncAPI document against the code: every topic the service reads or creates, every
header a dead letter or a routed record carries, the payload schema files and the contract
version. (The document's own validity is checked by the official AsyncAPI parser in
dev/check_deploy.sh.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from confluent_kafka import Message

from schemas.export import DIR, MODELS, SCHEMA_VERSION
from schemas.validation import InputError
from stream import records
from stream.dead_letters import MAX_VALUE_BYTES, dead_letter, origin_headers
from stream.settings import Settings
from stream.topics import topic_specs
from tests.conftest import ROOT

DOC_PATH = ROOT / "deploy" / "asyncapi" / "asyncapi.yaml"
DOC: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())


def message(name: str) -> dict[str, Any]:
    return DOC["components"]["messages"][name]


def channel_by_address(s: Settings) -> dict[str, dict[str, Any]]:
    return {ch["address"].replace("{prefix}", s.prefix): ch for ch in DOC["channels"].values()}


def test_every_topic_is_a_channel() -> None:
    s = Settings()
    channels = channel_by_address(s)
    topics = {t.topic for t in topic_specs(s)} | set(s.input_topics)
    assert topics == set(channels)
    for spec in topic_specs(s):
        policy = (spec.config or {}).get("cleanup.policy", "delete")
        bound = channels[spec.topic]["bindings"]["kafka"]["topicConfiguration"]
        assert bound["cleanup.policy"] == [policy], spec.topic


def test_dead_letter_headers_are_the_ones_written() -> None:
    declared = message("DeadLetter")["headers"]
    big = b"x" * (MAX_VALUE_BYTES + 1)
    msg = Message(topic="in", partition=2, offset=7, key=b"doc-1", value=big)
    _, _, headers = dead_letter(msg, InputError("not_json", "nope", "JSONDecodeError"), "router")
    written = {k for k, _ in headers}
    assert written == set(declared["properties"])
    assert set(declared["required"]) == written - {"truncated_from"}
    assert "not_json" in declared["properties"]["reason"]["description"]
    assert set(declared["properties"]["stage"]["enum"]) == {"router", "worker"}


def test_routed_records_headers_and_layout() -> None:
    declared = DOC["components"]["schemas"]["OriginHeaders"]
    msg = Message(topic="in", partition=0, offset=1, key=b"doc-1", value=b"{}")
    assert {k for k, _ in origin_headers(msg)} == set(declared["properties"])
    ev = records.Routed("i", None, "event", "m", 1.0, {}, np.array([1.0, 0.0], np.float32))
    raw = records.encode_event(ev)
    n = int.from_bytes(raw[4:8], "little")
    assert raw[:4] == b"S4v1" and len(raw) == 8 + n + 2 * 4
    text = message("RoutedVector")["description"]
    assert "`S4v1`" in text and "4-byte little-endian" in text and "float32" in text


def test_payloads_are_the_generated_schema_files_of_this_version() -> None:
    assert DOC["info"]["version"] == SCHEMA_VERSION
    refs = {
        (DOC_PATH.parent / m["payload"]["$ref"]).resolve()
        for m in DOC["components"]["messages"].values()
        if "$ref" in m.get("payload", {})
    }
    assert all(p.exists() for p in refs), refs
    published = {DIR / f"{n}.schema.json" for n in MODELS if n != "reconsolidation_record"}
    assert {Path(p) for p in refs} == published
