#!/usr/bin/env bash
# Offline checks of everything deployment-side: Prometheus alert rules (promtool check + unit
# tests), the metrics exposition (promtool check metrics), docker-compose.yml (docker-compose
# v1 `config`), the helm chart (helm lint --strict, helm template, the rendered manifests
# against the Kubernetes schemas of kubernetes-validate, engine values rendered as TOML that
# the service loads) and the AsyncAPI document (the official @asyncapi/parser on node).
#
# Installs what is missing on first use: Debian's prometheus (promtool), docker-compose and
# nodejs/npm; helm v3.16.4 built from the Go module proxy into $(go env GOPATH)/bin (about
# 3.5 minutes once); the AsyncAPI parser into dev/asyncapi/node_modules (npm ci, pinned by
# package-lock.json). Quick afterwards (a few seconds). dev/test.sh runs it before pytest.
# VENV names the Python environment (default .venv, made by dev/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
HELM_VERSION=v3.16.4
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
say() { printf '== %s\n' "$*"; }

apt_install() {  # package names; apt-get update only when the first try fails
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null
  }
}

# ------------------------------------------------------------------ tools
command -v promtool >/dev/null 2>&1 || { say "installing prometheus (promtool)"; apt_install prometheus; }
command -v docker-compose >/dev/null 2>&1 || { say "installing docker-compose"; apt_install docker-compose; }
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { say "installing nodejs"; apt_install nodejs npm; }
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || { say "installing golang"; apt_install golang-go; }
GO=$(command -v go || echo /usr/local/go/bin/go)
HELM="$("$GO" env GOPATH)/bin/helm"
# a `go install` build reports only major.minor (no release ldflags)
if ! "$HELM" version --short 2>/dev/null | grep -q "^${HELM_VERSION%.*}"; then
  say "building helm $HELM_VERSION from the Go module proxy (a few minutes, once)"
  GOFLAGS=-mod=mod "$GO" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
stamp=dev/asyncapi/node_modules/.installed-$(sha1sum dev/asyncapi/package-lock.json | cut -c1-12)
if [ ! -f "$stamp" ]; then
  say "installing the AsyncAPI parser (npm ci)"
  (cd dev/asyncapi && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$stamp"
fi
"$PY" -c "import kubernetes_validate" 2>/dev/null || {
  echo "kubernetes-validate missing from $VENV: run dev/setup.sh (it is in the dev extra)" >&2
  exit 1
}

# ------------------------------------------------------------------ Prometheus
say "promtool: alert rules and their unit tests"
(cd deploy/prometheus && promtool check rules alerts.yml >/dev/null && promtool test rules alerts.test.yml)
say "promtool: the service's metrics exposition"
"$PY" -c "from prometheus_client import generate_latest; from stream import metrics; import sys; sys.stdout.write(generate_latest(metrics.REGISTRY).decode())" \
  | promtool check metrics

# ------------------------------------------------------------------ docker compose
say "docker-compose config"
POSTGRES_PASSWORD=check CLUSTERER_API_TOKEN=check GRAFANA_ADMIN_PASSWORD=check \
  docker-compose -f docker-compose.yml config -q

# ------------------------------------------------------------------ helm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
all_on=(--set api.ingress.enabled=true --set api.ingress.className=nginx
        --set 'api.ingress.tls[0].secretName=clusterer-tls'
        --set 'api.ingress.tls[0].hosts[0]=clusterer.example.local'
        --set keda.enabled=true --set metrics.serviceMonitor.enabled=true)
say "helm lint --strict (defaults; every option on; the API off)"
"$HELM" lint --strict --quiet helm/clusterer >/dev/null
"$HELM" lint --strict --quiet helm/clusterer "${all_on[@]}" >/dev/null
"$HELM" lint --strict --quiet helm/clusterer --set api.enabled=false >/dev/null
say "helm template | kubernetes-validate (Kubernetes 1.29 and the newest it ships)"
"$HELM" template rel helm/clusterer > "$tmp/default.yaml"
"$HELM" template rel helm/clusterer "${all_on[@]}" > "$tmp/all.yaml"
"$PY" dev/validate_manifests.py -k 1.29.0 -k "$("$PY" -c 'import kubernetes_validate as k; print(k.latest_version())')" \
  "$tmp/default.yaml" "$tmp/all.yaml"
say "helm template: --set engine values reach the service as typed TOML"
"$HELM" template rel helm/clusterer --show-only templates/configmap.yaml \
  --set engine.assign_threshold=0.6 --set engine.reconsolidate_items=1000000 \
  --set engine.drift_delta=0.00001 --set 'engine.scope_fields={domain}' \
  --set engine.search_backend=numpy > "$tmp/cm.yaml"
"$PY" - "$tmp/cm.yaml" <<'PY'
import sys, tempfile, pathlib, yaml
from stream.replay import load_config
toml = yaml.safe_load(open(sys.argv[1]))["data"]["engine.toml"]
path = pathlib.Path(tempfile.mkdtemp()) / "engine.toml"
path.write_text(toml)
cfg = load_config(path)
got = (cfg.assign_threshold, cfg.reconsolidate_items, cfg.drift_delta, cfg.scope_fields, cfg.search_backend)
assert got == (0.6, 1_000_000, 1e-05, ("domain",), "numpy"), got
assert isinstance(cfg.reconsolidate_items, int) and isinstance(cfg.assign_threshold, float), got
print("engine.toml loads:", got)
PY
if "$HELM" template rel helm/clusterer --set engine.assign_threshold=high >/dev/null 2>&1; then
  echo "values.schema.json accepted a non-numeric engine.assign_threshold" >&2
  exit 1
fi

# ------------------------------------------------------------------ AsyncAPI
say "AsyncAPI parser"
node dev/asyncapi/validate.mjs deploy/asyncapi/asyncapi.yaml
say "deployment checks passed"
