"""Log output: librdkafka's lines through Python logging, deduplicated; JSON lines for log
collectors; `clusterer --version`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from stream.buildinfo import version
from stream.logs import KAFKA_LOGGER, Deduplicate, JsonFormatter, configure, kafka_logger
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.conftest import ROOT
from tests.stream.conftest import free_port


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _dedup() -> Deduplicate:
    return next(f for f in kafka_logger().filters if isinstance(f, Deduplicate))


@pytest.fixture
def kafka_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collect]:
    """A handler on the librdkafka logger, with the deduplication state of this test only."""
    monkeypatch.setattr(_dedup(), "_seen", {})
    handler = Collect()
    kafka_logger().addHandler(handler)
    try:
        yield handler
    finally:
        kafka_logger().removeHandler(handler)


def _fails(handler: Collect) -> list[str]:
    """Client names of the failed-connect lines that reached the handler."""
    return [str(r.args[1]) for r in handler.records if r.args and r.args[0] == "FAIL"]  # type: ignore[index]


def test_librdkafka_lines_arrive_through_logging_once_not_raw_on_stderr(
    kafka_lines: Collect, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every kind of client of the service at a port where no broker listens: the failed
    connects (one per attempt, dozens a second) reach Python logging once per kind of
    client, and nothing reaches stderr raw."""
    s = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    consumer = Consumer(s.consumer_config("nobody"))
    producer = Producer(s.client_config())
    consumer.subscribe(["nothing"])
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # attempts repeat within the window
            consumer.poll(0.1)
            producer.poll(0.1)
    finally:
        consumer.close()
    names = _fails(kafka_lines)
    assert [n.split("#")[1].split("-")[0] for n in names] == ["consumer", "producer"], names
    fails = [r for r in kafka_lines.records if r.getMessage().startswith("FAIL [")]
    assert all(r.name == KAFKA_LOGGER and r.levelno == logging.ERROR for r in fails)
    assert "Connection refused" in kafka_lines.records[0].getMessage()
    dropped = sum(n for _, n in _dedup()._seen.values())
    assert dropped >= 5, "the repeats were dropped"

    _dedup()._seen.clear()  # the admin client is a producer to librdkafka: alike lines
    kafka_lines.records.clear()
    with pytest.raises(KafkaException):
        ensure_topics(s, timeout=1.0)
    assert len(_fails(kafka_lines)) == 1
    assert "|FAIL|" not in capfd.readouterr().err


def test_like_lines_are_dropped_for_a_window_then_counted() -> None:
    now = [0.0]
    dedup = Deduplicate(window=60.0, clock=lambda: now[0])

    def line(after_ms: int, broker: str = "a") -> bool:
        rec = logging.LogRecord(
            KAFKA_LOGGER, logging.ERROR, __file__, 1,
            "%s [%s] %s", ("FAIL", "rdkafka#consumer-1", f"{broker}: failed (after {after_ms}ms)"),
            None,
        )  # fmt: skip
        passed = dedup.filter(rec)
        line.last = rec  # type: ignore[attr-defined]
        return passed

    assert line(0)
    passed = []
    for i in range(100):
        now[0] += 0.5
        passed.append(line(i))
    assert not any(passed)
    assert line(1, broker="b"), "another broker's line is not alike"
    now[0] = 61.0
    assert line(7)
    assert "(100 like it in the last 60s not shown)" in line.last.getMessage()  # type: ignore[attr-defined]


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def test_json_format_is_one_object_per_line(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "json")
    log = logging.getLogger("stream.test")
    log.info("partition %d: %s", 3, "loaded")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("batch failed\nsecond line")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "stream.test"
    assert first["message"] == "partition 3: loaded"
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert second["message"] == "batch failed\nsecond line"
    assert "ValueError: boom" in second["exception"]
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)


def test_text_format_stays_the_default(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", "text")
    logging.getLogger("stream.test").warning("plain")
    assert capsys.readouterr().err == "WARNING stream.test: plain\n"


def test_version_and_a_bad_log_format() -> None:
    cli = [sys.executable, "-m", "stream.cli"]
    out = subprocess.run([*cli, "--version"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith(f"clusterer {version()} (faiss-")
    bad = subprocess.run(
        [*cli, "lag"], cwd=ROOT, capture_output=True, text=True,
        env={"CLUSTERER_LOG_FORMAT": "xml", "PATH": "/usr/bin"},
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "clusterer: CLUSTERER_LOG_FORMAT='xml' is not valid (text or json)"
    ]
