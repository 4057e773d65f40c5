"""Logging of every `clusterer` command: plain text for people, one JSON object per line for
log collectors on Kubernetes (CLUSTERER_LOG_FORMAT), and librdkafka's own lines routed
through Python logging instead of raw `%3|...|FAIL|` lines on stderr."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from stream.settings import SettingsError

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
KAFKA_LOGGER = "librdkafka"
_NUMBERS = re.compile(r"\d+")


class JsonFormatter(logging.Formatter):
    """time (UTC, ISO 8601), level, logger, message; the traceback, when there is one, in
    `exception`, so a record never spans lines."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class Deduplicate(logging.Filter):
    """Lets the first of a run of like lines through and drops its repeats for `window`
    seconds; the next one after the window says how many were dropped. Lines are alike when
    they differ only in numbers (timings, counts). A broker that is down makes every client
    log a failed connect per attempt: hundreds of lines a minute that say one thing."""

    MAX_KEYS = 1000

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.name, record.levelno, _NUMBERS.sub("#", text))
        now = self.clock()
        with self._lock:
            since, dropped = self._seen.get(key, (-float("inf"), 0))
            if now - since < self.window:
                self._seen[key] = (since, dropped + 1)
                return False
            if len(self._seen) >= self.MAX_KEYS:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
            self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{text} ({dropped} like it in the last {self.window:.0f}s not shown)"
            record.args = ()
        return True


def kafka_logger() -> logging.Logger:
    """The logger given to every Kafka client (confluent-kafka's `logger` setting): its lines
    arrive here, deduplicated, when the client is polled."""
    logger = logging.getLogger(KAFKA_LOGGER)
    if not any(isinstance(f, Deduplicate) for f in logger.filters):
        logger.addFilter(Deduplicate())
    return logger


def log_format_from_env() -> str:
    raw = os.environ.get("CLUSTERER_LOG_FORMAT", "text").strip().lower()
    if raw not in LOG_FORMATS:
        raise SettingsError(f"CLUSTERER_LOG_FORMAT={raw!r} is not valid (text or json)")
    return raw


def configure(level: str, fmt: str) -> None:
    """One handler on stderr for the whole process, replacing any earlier one."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
