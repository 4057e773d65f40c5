"""The ceiling the machine puts on the service: the same Kafka hops as `clusterer worker`,
with no work between them (no validation, no clustering, no PostgreSQL, no Redis).

    dev/services.sh up
    .venv/bin/python -m benchmarks.kafka_floor --dim 384 --count 60000

Hop 1 (the router's shape): consume the input backlog, produce one record per input in a
Kafka transaction that also carries the consumer offsets (read_committed downstream).
Hop 2 (the clustering worker's shape): consume those records read_committed, produce one
small assignment per record with an idempotent producer, flush per batch, commit offsets.
Both hops run in this one process, alternating, as the one-loop worker does; the clock
runs from the first poll until every assignment is delivered. The payload of each input is
a per-vector event of the given dimension (base64 vector), like the service benchmark's.
Prints one JSON line: events/s and CPU seconds per event of this process and of the broker.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import uuid
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.cpu import own_cpu_seconds, per_event_us, service_cpu_seconds
from stream.settings import Settings


def make_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futs = admin.create_topics([NewTopic(n, num_partitions=partitions) for n in names])
    for fut in futs.values():
        fut.result(30)


def backlog(bootstrap: str, topic: str, count: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i in range(count):
        vec = rng.standard_normal(dim).astype("<f4")
        vec /= np.linalg.norm(vec)
        value = json.dumps(
            {
                "item_id": f"i{i}",
                "document_id": f"d{i}",
                "embedding_type": "document",
                "embedding_model": "floor",
                "event_time": float(i),
                "metadata": {"title": f"title {i}"},
                "vector": base64.b64encode(vec.tobytes()).decode(),
            }
        ).encode()
        while True:
            try:
                p.produce(topic, value, key=f"d{i}".encode())
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(60):
        raise RuntimeError("backlog not delivered")


def run(bootstrap: str, count: int, dim: int, partitions: int, batch: int) -> dict[str, Any]:
    prefix = f"floor{uuid.uuid4().hex[:8]}"
    t_in, t_mid, t_out = f"{prefix}.in", f"{prefix}.mid", f"{prefix}.out"
    make_topics(bootstrap, [t_in, t_mid, t_out], partitions)
    backlog(bootstrap, t_in, count, dim)

    common: dict[str, Any] = {"bootstrap.servers": bootstrap}
    c1 = Consumer(
        {**common, "group.id": f"{prefix}.r", "enable.auto.commit": False,
         "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
    )  # fmt: skip
    p1 = Producer(
        {**common, "transactional.id": f"{prefix}-tx", "enable.idempotence": True,
         "linger.ms": 5}
    )  # fmt: skip
    p1.init_transactions(30)
    c2 = Consumer(
        {**common, "group.id": f"{prefix}.w", "enable.auto.commit": False,
         "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
    )  # fmt: skip
    p2 = Producer(
        {**common, "enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}
    )  # fmt: skip
    c1.subscribe([t_in])
    c2.subscribe([t_mid])
    delivered = 0

    def on_delivery(err: Any, _msg: Message) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    def hop1() -> None:
        msgs = [m for m in c1.consume(batch, 0.1) if m.error() is None]
        if not msgs:
            return
        p1.begin_transaction()
        for m in msgs:
            p1.produce(t_mid, m.value(), key=m.key())
        nxt: dict[int, int] = {}
        for m in msgs:
            nxt[int(m.partition() or 0)] = int(m.offset() or 0) + 1
        offsets = [TopicPartition(t_in, p, o) for p, o in nxt.items()]
        p1.send_offsets_to_transaction(offsets, c1.consumer_group_metadata(), 30)
        p1.commit_transaction(30)

    def hop2() -> None:
        msgs = [m for m in c2.consume(batch, 0.1) if m.error() is None]
        if not msgs:
            return
        for m in msgs:
            value = b'{"item_id":"%s","cluster_id":"c","similarity":1.0}' % (m.key() or b"")
            p2.produce(t_out, value, key=m.key(), on_delivery=on_delivery)
        p2.flush(60)
        c2.commit(asynchronous=True)

    cpu0, svc0 = own_cpu_seconds(), service_cpu_seconds()
    t0 = time.perf_counter()
    deadline = time.monotonic() + 600
    while delivered < count:
        hop1()
        hop2()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {delivered} of {count} delivered")
    dt = time.perf_counter() - t0
    cpu1, svc1 = own_cpu_seconds(), service_cpu_seconds()
    for c in (c1, c2):
        c.close()
    admin = AdminClient(common)  # held until the futures resolve
    for fut in admin.delete_topics([t_in, t_mid, t_out]).values():
        fut.result(30)
    out: dict[str, Any] = {
        "mode": "kafka floor (router hop + worker hop, no work)",
        "dim": dim,
        "events": count,
        "events_per_s": round(count / dt),
        "seconds": round(dt, 2),
        "python_cpu_us_per_event": round((cpu1 - cpu0) / count * 1e6, 1),
        "services_cpu_us_per_event": per_event_us(svc0, svc1, count),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--count", type=int, default=60_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--batch", type=int, default=2000)
    args = ap.parse_args()
    bootstrap = Settings.from_env().kafka_bootstrap
    print(json.dumps(run(bootstrap, args.count, args.dim, args.partitions, args.batch)))


if __name__ == "__main__":
    main()
