"""Validates rendered Kubernetes manifests (`helm template` output) offline against the
Kubernetes JSON schemas that the PyPI package kubernetes-validate ships, strictly (unknown
fields are errors). Custom resources have no schema there; the kinds below are skipped by
name and reported, never silently.

    helm template rel helm/clusterer | python dev/validate_manifests.py -k 1.30.0 -k 1.37.0 -
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

# (apiVersion, kind) of the chart's optional custom resources
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}


def validate(docs: list[dict[str, Any]], versions: list[str]) -> list[str]:
    """Error lines, empty when every document is valid in every version."""
    errors: list[str] = []
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_RESOURCES:
            print(f"skipped (custom resource, no schema): {what}")
            continue
        before = len(errors)
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                errors.append(f"{what} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{what} (Kubernetes {version}): no schema for this kind")
        if len(errors) == before:
            print(f"valid: {what}")
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", "--kubernetes-version", action="append", dest="versions")
    p.add_argument("files", nargs="+", help="YAML files, - for stdin")
    args = p.parse_args(argv)
    docs: list[dict[str, Any]] = []
    for name in args.files:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        docs += [d for d in yaml.safe_load_all(text) if d]
    if not docs:
        print("no manifests to validate", file=sys.stderr)
        return 1
    errors = validate(docs, args.versions or [kubernetes_validate.latest_version()])
    for line in errors:
        print(f"INVALID {line}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
