"""The `clusterer` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from processors.scope import ScopeKey
from schemas.inputs import EMBEDDING_TYPES


def _replay(args: argparse.Namespace) -> int:
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
        )
    finally:
        if out_fh is not None:
            out_fh.close()
    try:
        if args.labels_out:
            np.save(args.labels_out, result.labels)
        if args.clusters_out:
            with args.clusters_out.open("w", encoding="utf-8") as fh:
                for c in result.engine.snapshot():
                    fh.write(c.model_dump_json() + "\n")
    except OSError as exc:
        print(f"clusterer replay: cannot write output: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clusterer", description=__doc__)
    p.add_argument("--log-level", default="WARNING")
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
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_replay)
    s = sub.add_parser("schemas", help="write the JSON Schema files of the contracts")
    s.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "schemas" / "json"
    )
    s.set_defaults(func=_export_schemas)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "batch_size", 1) < 1:
        print("clusterer: --batch-size must be at least 1", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
