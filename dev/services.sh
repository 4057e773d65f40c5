#!/usr/bin/env bash
# Real Kafka (KRaft, single node, jars from Maven Central), PostgreSQL and Redis on loopback,
# data under var/services. Idempotent: `up` returns at once for what is already running.
#
#   dev/services.sh up | down | status | env | stop postgres|redis|kafka
#
# Ports and names (environment, defaults):
#   CLUSTERER_KAFKA_PORT=19092  CLUSTERER_KAFKA_CONTROLLER_PORT=19093
#   CLUSTERER_PG_PORT=15432     CLUSTERER_REDIS_PORT=16379
#   CLUSTERER_SERVICES_DIR=var/services
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KAFKA_PORT=${CLUSTERER_KAFKA_PORT:-19092}
CTRL_PORT=${CLUSTERER_KAFKA_CONTROLLER_PORT:-19093}
PG_PORT=${CLUSTERER_PG_PORT:-15432}
REDIS_PORT=${CLUSTERER_REDIS_PORT:-16379}
DIR=${CLUSTERER_SERVICES_DIR:-$ROOT/var/services}
LIB=$ROOT/var/kafka/lib
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
PY=$ROOT/.venv/bin/python

log() { echo "services: $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "$what not ready after ${limit}s"
            return 1
        fi
        sleep 0.2
    done
}

apt_install() {
    log "installing $* (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

# ---------------------------------------------------------------- Kafka
kafka_jars() {
    # fetched again when dev/kafka/pom.xml changes (a stale jar left beside its successor
    # would stay on the classpath)
    local sum
    sum=$(sha256sum dev/kafka/pom.xml | cut -d' ' -f1)
    if ! ls "$LIB"/kafka_2.13-*.jar >/dev/null 2>&1 || [ "$(cat "$LIB/.pom.sha256" 2>/dev/null)" != "$sum" ]; then
        log "fetching Kafka jars with Maven (once per dev/kafka/pom.xml)"
        rm -rf "$LIB"
        mvn -q -f dev/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$LIB" >&2
        echo "$sum" >"$LIB/.pom.sha256"
    fi
}

kafka_ready() {
    "$PY" - "$KAFKA_PORT" 2>/dev/null <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}", "log_level": 0})
try:
    md = admin.list_topics(timeout=2)
except Exception:
    sys.exit(1)
sys.exit(0 if md.brokers else 1)
EOF
}

kafka_up() {
    if kafka_ready; then return 0; fi
    kafka_jars
    local kdir=$DIR/kafka
    mkdir -p "$kdir/data"
    cat >"$kdir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CTRL_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CTRL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kdir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=24
EOF
    cat >"$kdir/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=$kdir/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
EOF
    local jvm=(java -Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$kdir/log4j2.properties" -cp "$LIB/*")
    if [ ! -f "$kdir/data/meta.properties" ]; then
        local cid
        cid=$("$PY" -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
        "${jvm[@]}" kafka.tools.StorageTool format -t "$cid" -c "$kdir/server.properties" >"$kdir/format.log" 2>&1
    fi
    log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
    nohup "${jvm[@]}" kafka.Kafka "$kdir/server.properties" >"$kdir/stdout.log" 2>&1 &
    echo $! >"$kdir/pid"
    wait_for 90 "Kafka" kafka_ready
}

kafka_down() {
    local pidf=$DIR/kafka/pid
    [ -f "$pidf" ] || return 0
    local pid
    pid=$(cat "$pidf")
    if kill "$pid" 2>/dev/null; then
        wait_for 60 "Kafka shutdown" bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

# ---------------------------------------------------------------- PostgreSQL
pg() { runuser -u postgres -- "$PG_BIN/$1" "${@:2}"; }

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

pg_up() {
    if [ -z "$PG_BIN" ]; then apt_install postgresql; PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); fi
    if pg_ready; then return 0; fi
    local data pdir
    data=$(pg_data_dir)
    pdir=$(dirname "$data")
    mkdir -p "$pdir"
    chown postgres:postgres "$pdir"
    chmod o+x "$DIR" "$(dirname "$DIR")" 2>/dev/null || true
    if [ ! -f "$data/PG_VERSION" ]; then
        pg initdb -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    pg pg_ctl -D "$data" -l "$pdir/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $pdir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=100" start >/dev/null
    wait_for 60 "PostgreSQL" pg_ready
    if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='clusterer'" | grep -q 1; then
        psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database clusterer" >/dev/null
    fi
}

pg_down() {
    # the server on our port, wherever its data lives (another checkout may have started it)
    local data=""
    if pg_ready; then
        data=$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "show data_directory" 2>/dev/null || true)
    fi
    [ -n "$data" ] || data=$(pg_data_dir)
    [ -f "$data/postmaster.pid" ] || return 0
    mkdir -p "$DIR"
    echo "$data" >"$DIR/postgres-data-dir"  # `up` restarts this same server
    pg pg_ctl -D "$data" -m fast -w -t 60 stop >/dev/null || true
}

pg_data_dir() {
    local remembered
    remembered=$(cat "$DIR/postgres-data-dir" 2>/dev/null || true)
    if [ -n "$remembered" ] && [ -f "$remembered/PG_VERSION" ]; then
        echo "$remembered"
    else
        echo "$DIR/postgres/data"
    fi
}

# ---------------------------------------------------------------- Redis
redis_ready() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

redis_up() {
    command -v redis-server >/dev/null || apt_install redis-server
    if redis_ready; then return 0; fi
    local rdir=$DIR/redis
    mkdir -p "$rdir"
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$rdir" --daemonize yes \
        --pidfile "$rdir/pid" --logfile "$rdir/redis.log" --save "" --appendonly no >/dev/null
    wait_for 30 "Redis" redis_ready
}

redis_down() {
    redis_ready 2>/dev/null || return 0
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- main
print_env() {
    echo "export CLUSTERER_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
    echo "export CLUSTERER_POSTGRES_DSN=postgresql://postgres@127.0.0.1:$PG_PORT/clusterer"
    echo "export CLUSTERER_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
}

case "${1:-up}" in
up)
    [ -x "$PY" ] || dev/setup.sh
    mkdir -p "$DIR"
    pg_up
    redis_up
    kafka_up
    ;;
down)
    kafka_down
    redis_down
    pg_down
    ;;
stop)  # one service, for failure tests: stop postgres|redis|kafka
    case "${2:-}" in
    postgres) pg_down ;;
    redis) redis_down ;;
    kafka) kafka_down ;;
    *)
        echo "usage: dev/services.sh stop postgres|redis|kafka" >&2
        exit 2
        ;;
    esac
    ;;
status)
    kafka_ready && echo "kafka: up (127.0.0.1:$KAFKA_PORT)" || echo "kafka: down"
    pg_ready && echo "postgres: up (127.0.0.1:$PG_PORT)" || echo "postgres: down"
    redis_ready 2>/dev/null && echo "redis: up (127.0.0.1:$REDIS_PORT)" || echo "redis: down"
    ;;
env) print_env ;;
*)
    echo "usage: dev/services.sh up|down|status|env|stop NAME" >&2
    exit 2
    ;;
esac
