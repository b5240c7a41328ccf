#!/usr/bin/env bash
# Compares `pgbench -S` throughput in one run: direct to PostgreSQL, through pgbouncer, and
# through Gatehouse (auditing every statement write-ahead), with the simple and the prepared
# protocol. Prints tps and the ratio to direct.
#
#   bash bench/pgbench.sh            # 8 clients, 20 s per run
#   CLIENTS=16 SECONDS_PER_RUN=30 bash bench/pgbench.sh
#   PROFILE=simple bash bench/pgbench.sh   # perf profile of the gateway's hottest symbols
#                                          # (PERF_DATA=/tmp/gh.perf keeps the data, TOP=N)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${SECONDS_PER_RUN:-20}
SCALE=${SCALE:-10}
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
chmod 755 "$WORK"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need pgbench || ! need pgbouncer; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq postgresql postgresql-contrib pgbouncer >/dev/null
  else
    echo "pgbench and pgbouncer are required (apt-get install postgresql pgbouncer)" >&2; exit 1
  fi
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -p gatehouse >/dev/null 2>&1 || cargo build --release -p gatehouse
GH=$ROOT/target/release/gatehouse

PGPORT=$(free_port); BOUNCER_PORT=$(free_port); GH_PORT=$(free_port); ADMIN_PORT=$(free_port)
SVC_PW="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
echo "superpw" > "$WORK/pw"; [ "$(id -u)" = 0 ] && chown postgres "$WORK/pw"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A scram-sha-256 --pwfile="$WORK/pw" --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=128MB" start >/dev/null

cleanup() {
  [ -n "${GH_PID:-}" ] && kill "$GH_PID" 2>/dev/null || true
  pkill -f "$WORK/bouncer.ini" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export PGPASSWORD=superpw
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE ROLE bench LOGIN PASSWORD '$SVC_PW'" -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=$SVC_PW pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U bench bench >/dev/null 2>&1

# pgbouncer (transaction pooling, like most deployments).
cat > "$WORK/bouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = plain
auth_file = $WORK/users.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = $CLIENTS
logfile = $WORK/bouncer.log
INI
echo "\"bench\" \"$SVC_PW\"" > "$WORK/users.txt"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/bouncer.ini" "$WORK/users.txt"
as_pg pgbouncer "$WORK/bouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!

# Gatehouse with the embedded store and full auditing.
cat > "$WORK/gatehouse.toml" <<TOML
data_dir = "./gh-data"
[listen]
postgres = "127.0.0.1:$GH_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
[audit]
record_results = "${RECORD_RESULTS:-summary}"
durability = "${DURABILITY:-fsync}"
[[connection]]
name = "bench"
upstream = "127.0.0.1:$PGPORT"
database = "bench"
user = "bench"
password_env = "BENCH_DB_PASSWORD"
upstream_tls = "disable"
allow_groups = ["bench"]
TOML
BENCH_DB_PASSWORD=$SVC_PW GATEHOUSE_LOG=warn "$GH" serve -c "$WORK/gatehouse.toml" 2>"$WORK/gatehouse.log" &
GH_PID=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$GH_PORT) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$BOUNCER_PORT) 2>/dev/null && break
  sleep 0.1
done
TOKEN=$("$GH" token issue -c "$WORK/gatehouse.toml" --subject pgbench --group bench --ttl 1h)

if [ -n "${PROFILE:-}" ]; then
  # PROFILE=simple|prepared: a perf profile of the gateway for one pgbench run instead.
  MODE=${PROFILE}
  PERF_DATA=${PERF_DATA:-$WORK/perf.data}
  command -v perf >/dev/null 2>&1 || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
  PGSSLMODE=${PGSSLMODE:-disable} PGPASSWORD=$TOKEN pgbench -n -S -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -h 127.0.0.1 -p "$GH_PORT" -U bench bench 2>/dev/null | grep '^tps' &
  BENCH_PID=$!
  sleep 2
  perf record -F 499 -g -o "$PERF_DATA" -p "$GH_PID" -- sleep $((DURATION - 4)) 2>/dev/null
  wait "$BENCH_PID"
  perf report -i "$PERF_DATA" --no-children -g none --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -${TOP:-60}
  exit 0
fi

run() { # name port password mode
  local tps
  tps=$(PGPASSWORD=$3 pgbench -n -S -M "$4" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
        -h 127.0.0.1 -p "$2" -U bench bench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -1)
  echo "${tps:-0}"
}

export PGSSLMODE=disable
printf "pgbench -S, %s clients, %s threads, %ss per run, scale %s, record_results=%s, durability=%s\n\n" \
  "$CLIENTS" "$THREADS" "$DURATION" "$SCALE" "${RECORD_RESULTS:-summary}" "${DURABILITY:-fsync}"
printf "%-10s %-20s %12s %8s\n" mode target tps ratio
for mode in simple prepared; do
  direct=$(run direct "$PGPORT" "$SVC_PW" "$mode")
  bouncer=$(run pgbouncer "$BOUNCER_PORT" "$SVC_PW" "$mode")
  gate=$(run gatehouse "$GH_PORT" "$TOKEN" "$mode")
  # The gateway offers TLS (libpq's default sslmode=prefer takes it); PostgreSQL and
  # pgbouncer here do not, so the comparison runs without TLS and TLS gets its own row.
  gate_tls=$(PGSSLMODE=require run gatehouse "$GH_PORT" "$TOKEN" "$mode")
  for pair in "direct:$direct" "pgbouncer:$bouncer" "gatehouse:$gate" "gatehouse+TLS:$gate_tls"; do
    name=${pair%%:*}; tps=${pair#*:}
    printf "%-10s %-20s %12.0f %8.2f\n" "$mode" "$name" "$tps" "$(echo "$tps / $direct" | bc -l)"
  done
  printf "%-10s %-20s %21.2f\n" "$mode" "gatehouse/pgbouncer" "$(echo "$gate / $bouncer" | bc -l)"
done
records=$("$GH" audit export -c "$WORK/gatehouse.toml" | grep -c '"kind":"statement"' || true)
echo
echo "audited statements written by gatehouse during the run: $records"
"$GH" audit verify -c "$WORK/gatehouse.toml" >/dev/null 2>&1 && echo "audit chain: verified" || echo "audit chain: verify FAILED"
