#!/usr/bin/env bash
# The managed-store servers tests/managed_stores.rs runs against, next to the plain Redis
# (6379) and PostgreSQL (5432) that .ci/run starts:
#
#   PostgreSQL with TLS only   127.0.0.1:5433  (cluster "15 tls"; certificate for localhost)
#   Redis with TLS only        127.0.0.1:6380
#   Redis Cluster, 3 masters   127.0.0.1:7001-7003
#   PgBouncer, transaction     127.0.0.1:6432  (in front of 127.0.0.1:5432)
#
# Idempotent: a server that answers is left alone; one that does not is started and awaited
# for up to 30 s. The test CA, a second CA nobody trusts, and the server certificate are made
# once under $IDEMPOTENT_CI_TLS_DIR (default /tmp/idempotent-ci-tls). Needs root (it may
# install pgbouncer with apt-get and creates a PostgreSQL cluster). Prints one line per service.
set -euo pipefail

TLS_DIR=${IDEMPOTENT_CI_TLS_DIR:-/tmp/idempotent-ci-tls}
RUN_DIR=${IDEMPOTENT_CI_RUN_DIR:-/tmp/idempotent-ci-services}
PG_VERSION=$(ls /etc/postgresql | sort -n | tail -1)
PG_TLS_PORT=5433
REDIS_TLS_PORT=6380
CLUSTER_PORTS=(7001 7002 7003)
PGBOUNCER_PORT=6432

wait_until() { # wait_until <what> <command...>
    local what=$1
    shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then
            echo "ci-services: $what answers"
            return 0
        fi
        sleep 0.5
    done
    echo "ci-services: $what does not answer after 30 s" >&2
    return 1
}

# --- certificates ------------------------------------------------------------------------
make_certificates() {
    mkdir -p "$TLS_DIR"
    cd "$TLS_DIR"
    [ -s ca.pem ] && [ -s server.pem ] && [ -s other-ca.pem ] && return 0
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=idempotent-actix test CA" \
        -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=untrusted test CA" \
        -keyout other-ca.key -out other-ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile server.ext -out server.pem 2>/dev/null
    # PostgreSQL refuses a key others can read, and runs as its own user.
    chmod 600 server.key
    chmod 644 ca.pem other-ca.pem server.pem
    cd - >/dev/null
}
make_certificates
echo "ci-services: test CA at $TLS_DIR/ca.pem"

# --- PostgreSQL with TLS -----------------------------------------------------------------
pg_tls_answers() {
    psql "postgres://postgres@localhost:$PG_TLS_PORT/postgres?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.pem" \
        -Atc 'SELECT 1' | grep -qx 1
}
if ! pg_tls_answers 2>/dev/null; then
    if ! pg_lsclusters -h | awk '{print $2}' | grep -qx tls; then
        pg_createcluster "$PG_VERSION" tls --port "$PG_TLS_PORT" >/dev/null
    fi
    conf_dir=/etc/postgresql/$PG_VERSION/tls
    data_dir=/var/lib/postgresql/$PG_VERSION/tls
    install -o postgres -g postgres -m 600 "$TLS_DIR/server.key" "$data_dir/server.key"
    install -o postgres -g postgres -m 644 "$TLS_DIR/server.pem" "$data_dir/server.pem"
    cat >"$conf_dir/conf.d/idempotent-ci.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_TLS_PORT
ssl = on
ssl_cert_file = '$data_dir/server.pem'
ssl_key_file = '$data_dir/server.key'
max_connections = 60
fsync = off
EOF
    # TLS connections only: a test that connects proves it used TLS.
    cat >"$conf_dir/pg_hba.conf" <<EOF
local     all all              trust
hostssl   all all 127.0.0.1/32 trust
hostnossl all all 127.0.0.1/32 reject
EOF
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" tls restart 2>/dev/null ||
        pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" tls start
fi
wait_until "PostgreSQL with TLS (127.0.0.1:$PG_TLS_PORT)" pg_tls_answers

# --- Redis with TLS ----------------------------------------------------------------------
redis_tls_answers() {
    [ "$(redis-cli --tls --cacert "$TLS_DIR/ca.pem" -h 127.0.0.1 -p "$REDIS_TLS_PORT" ping 2>/dev/null)" = PONG ]
}
if ! redis_tls_answers; then
    mkdir -p "$RUN_DIR/redis-tls"
    redis-server --daemonize yes --bind 127.0.0.1 --port 0 --tls-port "$REDIS_TLS_PORT" \
        --tls-cert-file "$TLS_DIR/server.pem" --tls-key-file "$TLS_DIR/server.key" \
        --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients no \
        --save "" --appendonly no --dir "$RUN_DIR/redis-tls" --logfile "$RUN_DIR/redis-tls/redis.log"
fi
wait_until "Redis with TLS (127.0.0.1:$REDIS_TLS_PORT)" redis_tls_answers

# --- Redis Cluster -----------------------------------------------------------------------
cluster_ok() { redis-cli -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }
if ! cluster_ok; then
    for port in "${CLUSTER_PORTS[@]}"; do
        if [ "$(redis-cli -p "$port" ping 2>/dev/null)" != PONG ]; then
            mkdir -p "$RUN_DIR/cluster-$port"
            redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
                --cluster-config-file nodes.conf --cluster-node-timeout 5000 --save "" --appendonly no \
                --dir "$RUN_DIR/cluster-$port" --logfile "$RUN_DIR/cluster-$port/redis.log"
        fi
        wait_until "Redis Cluster node 127.0.0.1:$port" redis-cli -p "$port" ping
    done
    # A fresh set of nodes has no slots yet; nodes that already form the cluster only need time.
    if [ "$(redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep '^cluster_slots_assigned:' | tr -dc 0-9)" = 0 ]; then
        nodes=()
        for port in "${CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    fi
fi
wait_until "Redis Cluster (127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[-1]}, 3 masters)" cluster_ok

# --- PgBouncer in transaction mode -------------------------------------------------------
pgbouncer_answers() { psql "postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/postgres" -Atc 'SELECT 1' | grep -qx 1; }
if ! pgbouncer_answers 2>/dev/null; then
    if ! command -v pgbouncer >/dev/null; then
        echo "ci-services: installing pgbouncer"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }
    fi
    mkdir -p "$RUN_DIR/pgbouncer"
    cat >"$RUN_DIR/pgbouncer/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=5432 dbname=postgres user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
auth_type = any
pool_mode = transaction
default_pool_size = 10
max_client_conn = 1000
logfile = $RUN_DIR/pgbouncer/pgbouncer.log
pidfile = $RUN_DIR/pgbouncer/pgbouncer.pid
unix_socket_dir =
EOF
    chown -R postgres:postgres "$RUN_DIR/pgbouncer"
    # PgBouncer refuses to run as root.
    pgbouncer -d -u postgres "$RUN_DIR/pgbouncer/pgbouncer.ini"
fi
wait_until "PgBouncer, transaction pooling (127.0.0.1:$PGBOUNCER_PORT -> 127.0.0.1:5432)" pgbouncer_answers
