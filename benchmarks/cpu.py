"""CPU seconds of the local services and of this process, from /proc: where a benchmark's
time goes across processes (the broker, PostgreSQL and Redis share the two cores)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

# process group -> substring of the command line that identifies it
SERVICES = {"kafka broker": "kafka.Kafka", "postgresql": "postgres", "redis": "redis-server"}


def own_cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def service_cpu_seconds() -> dict[str, float]:
    """User + system CPU per service group, summed over its live processes (PostgreSQL's
    backends included while their connections are open)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(SERVICES, 0.0)
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        for group, needle in SERVICES.items():
            if needle in cmd:
                out[group] += (int(fields[11]) + int(fields[12])) / tick
                break
    return out


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (e.g. a router started by the benchmark)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_event_us(
    before: dict[str, float], after: dict[str, float], events: int
) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0.0)) / events * 1e6, 1) for k in after}


def thread_cpu_seconds() -> dict[str, float]:
    """User + system CPU of this process's live threads, grouped by thread name (digits
    dropped: librdkafka's "rdk:broker3" counts as "rdk:broker"); the main thread is the
    process's own name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out
