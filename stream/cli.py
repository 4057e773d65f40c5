"""The `clusterer` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from confluent_kafka import KafkaException

from schemas.errors import ClustererError
from schemas.inputs import EMBEDDING_TYPES

if TYPE_CHECKING:
    from stream.settings import Settings


def _replay(args: argparse.Namespace) -> int:
    from processors import ScopeKey
    from stream.replay import ReplayInputError, load_config, load_inputs, run

    try:
        config = load_config(args.config)
        inputs = load_inputs(args.vectors, args.timestamps, args.ids, args.metadata)
    except ReplayInputError as exc:
        print(f"clusterer replay: {exc}", file=sys.stderr)
        return 2
    scope = ScopeKey(args.embedding_type, args.model)
    try:
        out_fh = args.assignments_out.open("w", encoding="utf-8") if args.assignments_out else None
    except OSError as exc:
        print(f"clusterer replay: cannot write {args.assignments_out}: {exc}", file=sys.stderr)
        return 2
    try:
        result = run(
            inputs,
            config,
            scope,
            batch_size=args.batch_size,
            assignments_out=out_fh,
            progress=sys.stderr.isatty() and not args.quiet,
            live=args.as_live,
        )
    finally:
        if out_fh is not None:
            out_fh.close()
    try:
        if args.labels_out:
            np.save(args.labels_out, result.labels)
        if args.clusters_out:
            with args.clusters_out.open("w", encoding="utf-8") as fh:
                for c in result.engine.results():
                    fh.write(c.model_dump_json() + "\n")
    except OSError as exc:
        print(f"clusterer replay: cannot write output: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        if result.size_warnings:
            print(
                f"clusterer replay: {result.size_warnings} cluster(s) passed "
                f"{config.size_warning} members (size_warning)",
                file=sys.stderr,
            )
        covered = float((result.labels >= 0).mean())
        summary = {
            "items": int(result.labels.size),
            "clusters": int(result.labels.max() + 1) if result.labels.size else 0,
            "coverage": round(covered, 4),
            "scopes": result.engine.stats(),
        }
        print(json.dumps(summary), file=sys.stderr if args.assignments_out is None else sys.stdout)
    return 0


def _export_schemas(args: argparse.Namespace) -> int:
    from schemas.export import write_all

    for path in write_all(args.out):
        print(path)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    from stream.settings import Settings

    return Settings.from_env(
        kafka_bootstrap=getattr(args, "bootstrap", None),
        prefix=getattr(args, "prefix", None),
    )


def _worker(args: argparse.Namespace) -> int:
    from stream.replay import load_config
    from stream.service import run_worker

    s = _settings(args)
    config = load_config(args.config or s.engine_config)
    return run_worker(s, config, args.role)


def _db_migrate(args: argparse.Namespace) -> int:
    import asyncio

    from state.db import migrate

    applied = asyncio.run(migrate(_settings(args).postgres_dsn))
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _topics(args: argparse.Namespace) -> int:
    from stream.topics import delete_topics, ensure_topics

    if args.delete:
        deleted = delete_topics(_settings(args), include_inputs=args.with_inputs)
        print("deleted: " + (", ".join(deleted) if deleted else "nothing (none exist)"))
        return 0
    created = ensure_topics(_settings(args), include_inputs=args.with_inputs)
    print("created: " + (", ".join(created) if created else "nothing (all exist)"))
    return 0


def _lag(args: argparse.Namespace) -> int:
    from stream.ops import lag, print_lag

    print_lag(lag(_settings(args)))
    return 0


def _forget(args: argparse.Namespace) -> int:
    from stream.ops import forget_document

    n = forget_document(_settings(args), args.document_id)
    print(f"delete requested for {n} item(s) of document {args.document_id}")
    return 0


def _produce(args: argparse.Namespace) -> int:
    from stream.ops import produce_synthetic

    n = produce_synthetic(
        _settings(args),
        args.count,
        args.dim,
        args.rate,
        not args.vector_events,
        args.seed,
        model=args.model,
        granularities=not args.documents_only,
        prebuild=args.prebuild,
    )
    print(f"produced {n} synthetic Stage 3 messages")
    return 0


def _watch(args: argparse.Namespace) -> int:
    from stream.ops import watch

    watch(_settings(args), args.seconds, args.interval)
    return 0


def _api(args: argparse.Namespace) -> int:
    from api.app import serve
    from api.settings import ApiSettings
    from stream.replay import load_config

    s = ApiSettings.from_env(port=args.port, host=args.host)
    return serve(s, load_config(args.config or s.service.engine_config))


def _export(args: argparse.Namespace) -> int:
    import asyncio

    from state.db import DB_ERRORS
    from stream.export import ExportError, check_type, default_name, export, parse_day

    try:
        if not args.embedding_type or not args.date:
            raise ExportError("--embedding-type and --date are required")
        etype, day = check_type(args.embedding_type), parse_day(args.date)
        out = args.out or default_name(etype, day)
        n = asyncio.run(export(_settings(args).postgres_dsn, etype, day, out))
    except ExportError as exc:
        print(f"clusterer export: {exc}", file=sys.stderr)
        return 2
    except DB_ERRORS as exc:
        print(f"clusterer export: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"exported {n} {etype} clusters of {day.isoformat()} to {out}")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from stream.backfill import offline, publish, summary
    from stream.replay import load_config
    from stream.stage3 import Stage3Error, open_directory

    def fail(msg: str) -> int:
        print(f"clusterer backfill: {msg}", file=sys.stderr)
        return 2

    if args.offline and args.clusters_out is None:
        return fail("--offline needs --clusters-out FILE")
    if args.publish and (args.clusters_out or args.assignments_out):
        return fail("--clusters-out and --assignments-out go with --offline, not --publish")
    config = load_config(args.config) if args.offline else None
    try:
        directory = open_directory(args.indices, model=args.model)
    except Stage3Error as exc:
        return fail(str(exc))
    bar = sys.stderr.isatty() and not args.quiet
    if args.publish:
        n = publish(directory, _settings(args), args.topic, progress=bar)
        if not args.quiet:
            print(summary(directory, None, n), file=sys.stderr)
        return 0
    assert config is not None
    try:
        clusters = args.clusters_out.open("w", encoding="utf-8")
        assignments = (
            args.assignments_out.open("w", encoding="utf-8") if args.assignments_out else None
        )
    except OSError as exc:
        return fail(f"cannot write output: {exc}")
    try:
        outcomes = offline(directory, config, clusters, assignments, args.batch_size, bar)
    finally:
        clusters.close()
        if assignments is not None:
            assignments.close()
    if not args.quiet:
        print(summary(directory, outcomes, None), file=sys.stderr)
    return 0


def _stage3_fixture(args: argparse.Namespace) -> int:
    from stream.stage3_fixture import (
        FixtureInputError,
        FixtureOptions,
        load_inputs,
        parse_range,
        write_directory,
    )

    try:
        x, titles, ids = load_inputs(args.vectors, args.items, args.title_field, args.id_field)
        options = FixtureOptions(
            count=args.count,
            start_time=to_epoch(args.start),
            seconds_per_item=args.seconds_per_item,
            seed=args.seed,
            model=args.model,
            types=tuple(t.strip() for t in args.types.split(",") if t.strip()),
            events=parse_range(args.events),
            entities=parse_range(args.entities),
            storylines=parse_range(args.storylines),
        )
        counts = write_directory(args.out, x, titles, ids, options)
    except (FixtureInputError, ValueError) as exc:
        print(f"clusterer stage3-fixture: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(args.out), "vectors": counts}))
    return 0


def to_epoch(text: str) -> float:
    from schemas.inputs import to_epoch_seconds

    return to_epoch_seconds(text)


def _retention(args: argparse.Namespace) -> int:
    import asyncio

    from state.db import DB_ERRORS
    from stream.retention import print_report, run_with_stats

    s = _settings(args)
    try:
        report, stats = asyncio.run(
            run_with_stats(s.postgres_dsn, s.retention_policy(), dry_run=args.dry_run)
        )
    except DB_ERRORS as exc:
        print(f"clusterer retention: database error: {exc!r}", file=sys.stderr)
        return 1
    if report.skipped:
        print("clusterer retention: another retention run is in progress", file=sys.stderr)
        return 1
    print_report(report, stats)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from stream.buildinfo import describe

    p = argparse.ArgumentParser(prog="clusterer", description=__doc__)
    p.add_argument("--version", action="version", version=describe())
    p.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="run the engine over .npy vectors offline")
    r.add_argument("--vectors", type=Path, required=True, help="float32 rows (N, d)")
    r.add_argument("--timestamps", type=Path, help="epoch seconds (N,); default: row index")
    r.add_argument("--ids", type=Path, help="one unique id per line; default: row index")
    r.add_argument("--metadata", type=Path, help="JSONL, one object per row (titles, domain...)")
    r.add_argument("--config", type=Path, help="TOML with an [engine] table")
    r.add_argument("--embedding-type", default="document", choices=EMBEDDING_TYPES)
    r.add_argument("--model", default="replay", help="embedding model name of the scope")
    r.add_argument("--batch-size", type=int, default=1024)
    r.add_argument("--assignments-out", type=Path)
    r.add_argument("--labels-out", type=Path)
    r.add_argument("--clusters-out", type=Path)
    r.add_argument("--quiet", action="store_true", help="no progress bar, summary or warnings")
    r.add_argument(
        "--as-live",
        action="store_true",
        help="skip the final maintenance pass a file's end triggers, to compare exactly with a "
        "live service that consumed the same records (see README)",
    )
    r.set_defaults(func=_replay)
    s = sub.add_parser("schemas", help="write the JSON Schema files of the contracts")
    s.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "schemas" / "json"
    )
    s.set_defaults(func=_export_schemas)

    def service_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument("--bootstrap", help="Kafka bootstrap servers (CLUSTERER_KAFKA_BOOTSTRAP)")
        c.add_argument("--prefix", help="output topic prefix (CLUSTERER_PREFIX)")
        return c

    w = service_cmd("worker", "run the streaming service (router + clustering worker)")
    w.add_argument("--config", type=Path, help="TOML with an [engine] table")
    w.add_argument("--role", choices=("all", "router", "cluster"), default="all")
    w.set_defaults(func=_worker)
    db = sub.add_parser("db", help="database administration")
    dbs = db.add_subparsers(dest="db_command", required=True)
    m = dbs.add_parser("migrate", help="apply pending migrations (CLUSTERER_POSTGRES_DSN)")
    m.set_defaults(func=_db_migrate)
    t = service_cmd("topics", "create the service's topics (or delete them: --delete)")
    t.add_argument("--with-inputs", action="store_true", help="also the input topics (demo)")
    t.add_argument("--delete", action="store_true", help="delete the prefix's topics")
    t.set_defaults(func=_topics)
    lg = service_cmd("lag", "per partition: committed offset, high watermark, lag")
    lg.set_defaults(func=_lag)
    f = service_cmd("forget", "remove every item of a document (data-protection request)")
    f.add_argument("--document-id", required=True)
    f.set_defaults(func=_forget)
    pr = service_cmd("produce", "publish the built-in synthetic Stage 3 stream")
    pr.add_argument("--count", type=int, default=10_000)
    pr.add_argument("--dim", type=int, default=384)
    pr.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--model", default="synthetic-mpnet", help="embedding model name (scope)")
    pr.add_argument("--vector-events", action="store_true", help="per-vector events, not documents")
    pr.add_argument(
        "--documents-only", action="store_true", help="documents without events/entities/storylines"
    )
    pr.add_argument(
        "--prebuild",
        action="store_true",
        help="build every message before the first is sent (memory: count x message size)",
    )
    pr.set_defaults(func=_produce)
    wa = service_cmd("watch", "live view of the biggest clusters and the lag")
    wa.add_argument("--seconds", type=float, default=30.0)
    wa.add_argument("--interval", type=float, default=2.0)
    wa.set_defaults(func=_watch)
    ap = sub.add_parser("api", help="serve the HTTP API (read side and batch jobs)")
    ap.add_argument("--port", type=int, help="CLUSTERER_API_PORT (default 8000)")
    ap.add_argument("--host", help="CLUSTERER_API_HOST (default 0.0.0.0)")
    ap.add_argument("--config", type=Path, help="TOML with an [engine] table, for batch jobs")
    ap.set_defaults(func=_api)
    ex = sub.add_parser(
        "export", help="one UTC day of clusters as Stage 5 ClusterResult JSONL, from PostgreSQL"
    )
    ex.add_argument("--embedding-type", help="document, event, entity or storyline")
    ex.add_argument("--date", help="UTC day YYYY-MM-DD: clusters whose event-time span meets it")
    ex.add_argument("--out", type=Path, help="default: clustered_<type>s_<date>.jsonl")
    ex.set_defaults(func=_export)
    bf = service_cmd("backfill", "cluster a Stage 3 index directory (publish it, or offline)")
    bf.add_argument("--indices", type=Path, required=True, help="Stage 3 vector_indices dir")
    mode = bf.add_mutually_exclusive_group(required=True)
    mode.add_argument("--publish", action="store_true", help="send to the input topic")
    mode.add_argument("--offline", action="store_true", help="run the engine here, write JSONL")
    bf.add_argument("--clusters-out", type=Path, help="ClusterResult JSONL (--offline)")
    bf.add_argument("--assignments-out", type=Path, help="assignment JSONL (--offline)")
    bf.add_argument("--model", help="embedding model where the metadata names none")
    bf.add_argument("--topic", help="input topic (default: the first of CLUSTERER_INPUT_TOPICS)")
    bf.add_argument("--config", type=Path, help="TOML with an [engine] table (--offline)")
    bf.add_argument("--batch-size", type=int, default=1024)
    bf.add_argument("--quiet", action="store_true")
    bf.set_defaults(func=_backfill)
    fx = sub.add_parser("stage3-fixture", help="write a Stage 3 index directory from vectors")
    fx.add_argument("--vectors", type=Path, required=True, help="float rows (N, d), one per item")
    fx.add_argument("--items", type=Path, required=True, help="JSONL, one object per row")
    fx.add_argument("--out", type=Path, required=True)
    fx.add_argument("--title-field", default="title", help="field of an item holding its title")
    fx.add_argument("--id-field", help="field of an item holding its id (for source_url)")
    fx.add_argument("--count", type=int, help="documents to write (rows repeat); default: rows")
    fx.add_argument("--start", default="2025-12-01T00:00:00Z", help="first publication date")
    fx.add_argument("--seconds-per-item", type=float, default=60.0)
    fx.add_argument("--seed", type=int, default=0)
    fx.add_argument("--model", help="write this model_name into every entry's metadata")
    fx.add_argument("--types", default="documents,events,entities,storylines")
    fx.add_argument("--events", default="2-4", help="events per document (n or lo-hi)")
    fx.add_argument("--entities", default="3-5", help="entities per document")
    fx.add_argument("--storylines", default="1-2", help="storylines per document")
    fx.set_defaults(func=_stage3_fixture)
    rt = sub.add_parser("retention", help="remove what the retention policy names, once")
    rt.add_argument("--dry-run", action="store_true", help="count per table; change nothing")
    rt.set_defaults(func=_retention)
    return p


def _no_faiss(exc: ModuleNotFoundError, command: str) -> int:
    """`pip install .` without an extra: one line that says what to install."""
    if exc.name != "faiss":
        raise exc
    print(
        f"clusterer {command}: faiss is not installed; install the project with"
        " exactly one of the extras [cpu] or [gpu] (README: GPU)",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    from stream.logs import configure, log_format_from_env
    from stream.settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        configure(args.log_level, log_format_from_env())
    except (SettingsError, ValueError) as exc:  # ValueError: an unknown --log-level
        print(f"clusterer: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "batch_size", 1) < 1:
        print("clusterer: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        import stream.replay  # noqa: F401 - loads faiss: say which extra is missing
    except ModuleNotFoundError as exc:
        return _no_faiss(exc, args.command)
    try:
        return int(args.func(args))
    except ClustererError as exc:
        print(f"clusterer {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        return _no_faiss(exc, args.command)
    except (OSError, RuntimeError, KafkaException) as exc:
        print(f"clusterer {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
