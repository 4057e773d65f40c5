#!/usr/bin/env bash
# The main job end to end: services up (Kafka, PostgreSQL, Redis, installed on first use),
# migrations, topics, a worker in the background, the built-in synthetic Stage 3 stream
# produced at a steady rate, and a live view of the biggest clusters and the lag. The worker
# is stopped with SIGTERM at the end (graceful: finishes its batch, commits, leaves).
#
#   dev/run.sh [COUNT] [RATE]      defaults: 5000 documents at 300/s, 384-d
# Each synthetic document carries its events, entities and storylines (about 10 vectors), so
# the four granularities cluster side by side (`clusterer produce --documents-only` for one).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-5000}
RATE=${2:-300}
dev/setup.sh
dev/services.sh up
eval "$(dev/services.sh env)"
# a fresh database per demo run, so the view shows this run only
PG_PORT=${CLUSTERER_PG_PORT:-15432}
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "DROP DATABASE IF EXISTS clusterer_demo" \
    -c "CREATE DATABASE clusterer_demo" >/dev/null
export CLUSTERER_POSTGRES_DSN="postgresql://postgres@127.0.0.1:$PG_PORT/clusterer_demo"
export CLUSTERER_PREFIX=${CLUSTERER_PREFIX:-demo-$(date +%s)}
export CLUSTERER_INPUT_TOPICS=${CLUSTERER_INPUT_TOPICS:-$CLUSTERER_PREFIX.stage3}
export CLUSTERER_GROUP_ID=${CLUSTERER_GROUP_ID:-$CLUSTERER_PREFIX}
export CLUSTERER_HTTP_PORT=${CLUSTERER_HTTP_PORT:-8080}
C=.venv/bin/clusterer
# the previous demo's topics go (left behind, partitions pile up and slow the broker)
if [ -f var/run/demo-prefix ]; then
    OLD=$(cat var/run/demo-prefix)
    CLUSTERER_PREFIX=$OLD CLUSTERER_INPUT_TOPICS=$OLD.stage3 $C topics --delete --with-inputs || true
fi
mkdir -p var/run
echo "$CLUSTERER_PREFIX" >var/run/demo-prefix
$C db migrate
$C topics --with-inputs
$C --log-level INFO worker >var/run/worker.log 2>&1 &
WORKER=$!
# the query API and web view, with a token made for this run (never stored in the repo)
export CLUSTERER_API_PORT=${CLUSTERER_API_PORT:-8000}
export CLUSTERER_API_ADMIN_TOKENS=${CLUSTERER_API_ADMIN_TOKENS:-demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
$C --log-level INFO api >var/run/api.log 2>&1 &
API=$!
trap 'kill -TERM $WORKER $API 2>/dev/null; wait $WORKER $API 2>/dev/null || true' EXIT
$C produce --count "$COUNT" --rate "$RATE" --dim 384 &
PRODUCER=$!
SECONDS_TO_WATCH=$(( COUNT / RATE + 15 ))
$C watch --seconds "$SECONDS_TO_WATCH" --interval 2
wait $PRODUCER
echo "health: $(curl -s "localhost:$CLUSTERER_HTTP_PORT/readyz" || echo unreachable)"
echo "worker log: var/run/worker.log; metrics: http://localhost:$CLUSTERER_HTTP_PORT/metrics"
H="Authorization: Bearer $CLUSTERER_API_ADMIN_TOKENS"
API_URL="http://localhost:$CLUSTERER_API_PORT"
for t in document event entity storyline; do
    echo "== biggest $t clusters (GET /api/v1/clusters?embedding_type=$t&sort=size):"
    curl -sf -H "$H" "$API_URL/api/v1/clusters?embedding_type=$t&sort=size&limit=3" \
        | .venv/bin/python -c "
import json, sys
for c in json.load(sys.stdin)['items']:
    print('  %5d  %s  %s' % (c['cluster_size'], c['cluster_id'], c['cluster_label'] or ''))" \
        || echo "  (API unreachable: var/run/api.log)"
done
echo "API: $API_URL (web view at /, OpenAPI at /openapi.json); token for this run: $CLUSTERER_API_ADMIN_TOKENS"
echo "try: curl -s -H '$H' '$API_URL/api/v1/statistics'"
