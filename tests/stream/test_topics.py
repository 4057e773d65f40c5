"""Topic creation and deletion with the AdminClient against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from confluent_kafka.admin import AdminClient, ConfigResource

from stream.settings import Settings
from stream.topics import delete_topics, ensure_topics
from tests.conftest import ROOT, Services, wait_until


def test_topics_are_created_with_their_config_and_deleted(services: Services) -> None:
    prefix = f"topics{uuid.uuid4().hex[:8]}"
    s = Settings(
        kafka_bootstrap=services.kafka,
        input_topics=(f"{prefix}.in",),
        prefix=prefix,
        partitions=2,
    )
    admin = AdminClient({"bootstrap.servers": services.kafka})
    created = ensure_topics(s, include_inputs=True)
    assert set(created) == {
        s.by_scope_topic, s.assignments_topic, s.changes_topic, s.clusters_topic, s.dlq_topic,
        f"{prefix}.in",
    }  # fmt: skip
    assert ensure_topics(s, include_inputs=True) == []  # idempotent
    md = admin.list_topics(timeout=10).topics
    assert len(md[s.by_scope_topic].partitions) == 2
    res = ConfigResource(ConfigResource.Type.TOPIC, s.clusters_topic)
    cfg = admin.describe_configs([res])[res].result(10)
    assert cfg["cleanup.policy"].value == "compact"

    deleted = delete_topics(s, include_inputs=True)
    assert set(deleted) == set(created)

    def gone() -> bool:
        names = set(admin.list_topics(timeout=10).topics)
        return not names & set(created)

    wait_until(gone, 30, "topics deleted")


def test_topics_command_creates_and_deletes(services: Services) -> None:
    prefix = f"topics{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CLUSTERER_KAFKA_BOOTSTRAP": services.kafka,
        "CLUSTERER_PREFIX": prefix,
        "CLUSTERER_INPUT_TOPICS": f"{prefix}.in",
        "CLUSTERER_PARTITIONS": "1",
    }

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "stream.cli", "topics", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return out.stdout

    assert f"{prefix}.in" in cli("--with-inputs")
    assert f"{prefix}.by-scope" in cli("--delete", "--with-inputs")
