"""The dead-letter contract, in one place: what a message on `<prefix>.dlq` carries.

Key: the original input message's key (a worker-side dead letter recovers it from the
by-scope record's `source_key` header). Value: the original bytes (router), or the input
JSON the worker saw (worker; the vector in base64). Headers, always all of them:

| header | meaning |
| --- | --- |
| `reason` | a stable code (the list is in README.md, "Dead letters") |
| `detail` | a human sentence (at most 1,000 characters) |
| `error_class` | the exception class that revealed the problem (e.g. JSONDecodeError) |
| `stage` | `router` or `worker` |
| `source_topic`, `source_partition`, `source_offset` | where the input message is |
| `truncated_from` | only when the value was cut to fit the broker: its original size |

README.md documents the same table for operators.
"""

from __future__ import annotations

from typing import Literal, cast

from confluent_kafka import Message

from schemas.validation import InputError

Header = tuple[str, str | bytes | None]
Stage = Literal["router", "worker"]
MAX_VALUE_BYTES = 1_040_000
"""A dead letter's value is cut to this so that it fits the broker's default message limit
(1 MiB) with its headers; inputs over the 1 MB payload limit but under the broker's limit
travel whole."""


def origin_headers(msg: Message) -> list[Header]:
    """Where an input message is; routed records carry these (and its key) along."""
    out: list[Header] = [
        ("source_topic", str(msg.topic())),
        ("source_partition", str(msg.partition())),
        ("source_offset", str(msg.offset())),
    ]
    key = msg.key()
    if key is not None:
        out.append(("source_key", key))
    return out


def _carried(msg: Message) -> tuple[list[Header], bytes | None] | None:
    """The input's origin and key as carried by a routed (by-scope) record, if it is one."""
    raw = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    got = {k: v for k, v in raw if k.startswith("source_")}
    if not {"source_topic", "source_partition", "source_offset"} <= set(got):
        return None
    origin: list[Header] = [
        (k, (got[k] or b"").decode("utf-8", "replace"))
        for k in ("source_topic", "source_partition", "source_offset")
    ]
    return origin, got.get("source_key")


def dead_letter(
    msg: Message, err: InputError, stage: Stage, value: bytes | None = None
) -> tuple[bytes | None, bytes, list[Header]]:
    """(key, value, headers) of the dead letter for `msg`: the original key and origin, also
    when `msg` is a routed record the worker rejects."""
    carried = _carried(msg)
    if carried is not None:
        origin, key = carried
    else:
        origin, key = origin_headers(msg)[:3], msg.key()
    body = value if value is not None else (msg.value() or b"")
    headers: list[Header] = [
        ("reason", err.reason),
        ("detail", err.detail[:1000]),
        ("error_class", err.error_class),
        ("stage", stage),
        *origin,
    ]
    if len(body) > MAX_VALUE_BYTES:
        headers.append(("truncated_from", str(len(body))))
        body = body[:MAX_VALUE_BYTES]
    return key, body, headers
