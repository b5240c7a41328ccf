#!/usr/bin/env bash
# Compares `pgbench -S` in one run: direct to PostgreSQL, through pgbouncer, and through
# Gatehouse (auditing every statement write-ahead), interleaved on the same PostgreSQL:
# - throughput at each of CLIENT_SET (default "8 32") clients, simple and prepared protocol,
#   for each of RESULTS_SET (default "summary masked": audit.record_results);
# - 1-client latency (simple protocol);
# - a new connection per transaction (`pgbench -C`);
# - the disk's flush latency next to the audit store (append + fdatasync, and overwrite of a
#   preallocated file + fdatasync) and the bound it puts on fsync-durable throughput;
# - the gateway's CPU per statement (from /proc/<pid>/stat).
# Prints tps, ratios to direct and Gatehouse/pgbouncer.
#
#   bash bench/pgbench.sh                       # 20 s per run
#   CLIENT_SET="8" RESULTS_SET=summary SECONDS_PER_RUN=10 bash bench/pgbench.sh
#   DURABILITY=os bash bench/pgbench.sh
#   PROFILE=simple bash bench/pgbench.sh   # perf profile of the gateway's hottest symbols
#                                          # (PERF_DATA=/tmp/gh.perf keeps the data, TOP=N)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLIENTS=${CLIENTS:-8}
CLIENT_SET=${CLIENT_SET:-8 32}
RESULTS_SET=${RESULTS_SET:-summary masked}
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

# pgbouncer in session pooling (what the issue compares against; it supports prepared
# statements, which transaction pooling in pgbouncer 1.17 does not): BOUNCER_POOL_MODE=transaction
# for the other mode.
cat > "$WORK/bouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = plain
auth_file = $WORK/users.txt
pool_mode = ${BOUNCER_POOL_MODE:-session}
max_client_conn = 200
default_pool_size = 32
logfile = $WORK/bouncer.log
INI
echo "\"bench\" \"$SVC_PW\"" > "$WORK/users.txt"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/bouncer.ini" "$WORK/users.txt"
as_pg pgbouncer "$WORK/bouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!

# Gatehouse with the embedded store and full auditing; restarted for each record_results.
start_gatehouse() { # record_results
  cat > "$WORK/gatehouse.toml" <<TOML
data_dir = "./gh-data"
[listen]
postgres = "127.0.0.1:$GH_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
max_connections = 1000
[audit]
record_results = "$1"
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
  BENCH_DB_PASSWORD=$SVC_PW GATEHOUSE_LOG=warn "$GH" serve -c "$WORK/gatehouse.toml" 2>>"$WORK/gatehouse.log" &
  GH_PID=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$GH_PORT) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$BOUNCER_PORT) 2>/dev/null && break
    sleep 0.1
  done
  TOKEN=$("$GH" token issue -c "$WORK/gatehouse.toml" --subject pgbench --group bench --ttl 1h)
}
stop_gatehouse() {
  kill "$GH_PID" 2>/dev/null || true
  wait "$GH_PID" 2>/dev/null || true
  GH_PID=
}
start_gatehouse "${RECORD_RESULTS:-summary}"

if [ -n "${PROFILE:-}" ]; then
  # PROFILE=simple|prepared: a perf profile of the gateway for one pgbench run instead.
  MODE=${PROFILE}
  PERF_DATA=${PERF_DATA:-$WORK/perf.data}
  command -v perf >/dev/null 2>&1 || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
  PGSSLMODE=${PGSSLMODE:-disable} PGPASSWORD=$TOKEN pgbench -n -S -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -h 127.0.0.1 -p "$GH_PORT" -U bench bench 2>/dev/null | grep '^tps' &
  BENCH_PID=$!
  sleep 2
  perf record -F 499 ${PERF_CALLGRAPH:--g} -o "$PERF_DATA" -p "$GH_PID" -- sleep $((DURATION - 4)) 2>/dev/null
  wait "$BENCH_PID"
  perf report -i "$PERF_DATA" --no-children -g none --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -${TOP:-60}
  exit 0
fi

# pgbench's output for one run: name port password mode clients [extra pgbench options]
bench_out() {
  local port=$2 pw=$3 mode=$4 clients=$5; shift 5
  local threads=$THREADS; [ "$clients" -lt "$threads" ] && threads=$clients
  PGPASSWORD=$pw pgbench -n -S -M "$mode" -c "$clients" -j "$threads" -T "$DURATION" "$@" \
    -h 127.0.0.1 -p "$port" -U bench bench 2>/dev/null || true
}
tps_of() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -1; }
lat_of() { sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' | tail -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$GH_PID/stat"; }
ratio() { echo "scale=2; ${1:-0} / ${2:-1}" | bc -l; }

export PGSSLMODE=disable
CLK_TCK=$(getconf CLK_TCK)

# The disk's flush latency where the audit store lives (average of 200).
flush=$(python3 - "$WORK" <<'PY'
import os, sys, time
d = sys.argv[1]
def run(prealloc):
    p = os.path.join(d, "flush-probe")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    if prealloc:
        os.write(fd, b"\0" * (4096 * 200)); os.fsync(fd); os.lseek(fd, 0, 0)
    t = time.perf_counter()
    for _ in range(200):
        os.write(fd, b"x" * 4096); os.fdatasync(fd)
    dt = (time.perf_counter() - t) / 200
    os.close(fd); os.unlink(p)
    return dt * 1000
print("%.3f %.3f" % (run(False), run(True)))
PY
)
flush_append=${flush% *}; flush_overwrite=${flush#* }
printf "pgbench -S, %ss per run, scale %s, durability=%s, %s threads\n" "$DURATION" "$SCALE" "${DURABILITY:-fsync}" "$THREADS"
printf "flush latency here: %s ms appending, %s ms overwriting a preallocated file\n\n" "$flush_append" "$flush_overwrite"

for results in $RESULTS_SET; do
  stop_gatehouse; start_gatehouse "$results"
  echo "== record_results = $results"
  printf "%-8s %-9s %-11s %10s %8s %10s\n" clients mode target tps ratio "cpu/stmt"
  for clients in $CLIENT_SET; do
    for mode in simple prepared; do
      direct=$(bench_out direct "$PGPORT" "$SVC_PW" "$mode" "$clients" | tps_of)
      bouncer=$(bench_out pgbouncer "$BOUNCER_PORT" "$SVC_PW" "$mode" "$clients" | tps_of)
      t0=$(cpu_ticks)
      gate=$(bench_out gatehouse "$GH_PORT" "$TOKEN" "$mode" "$clients" | tps_of)
      t1=$(cpu_ticks)
      cpu=$(echo "scale=1; ($t1 - $t0) * 1000000 / $CLK_TCK / (${gate:-1} * $DURATION)" | bc -l)
      printf "%-8s %-9s %-11s %10.0f %8.2f\n" "$clients" "$mode" direct "${direct:-0}" 1
      printf "%-8s %-9s %-11s %10.0f %8.2f\n" "$clients" "$mode" pgbouncer "${bouncer:-0}" "$(ratio "$bouncer" "$direct")"
      printf "%-8s %-9s %-11s %10.0f %8.2f %8s us\n" "$clients" "$mode" gatehouse "${gate:-0}" "$(ratio "$gate" "$direct")" "$cpu"
      printf "%-8s %-9s %-11s %19s\n" "$clients" "$mode" "gh/bouncer" "$(ratio "$gate" "$bouncer")"
      if [ "${DURABILITY:-fsync}" = fsync ]; then
        bound=$(echo "scale=0; $clients * 1000 / $flush_overwrite" | bc -l)
        printf "%-8s %-9s %-11s %10s %8s\n" "$clients" "$mode" "disk bound" "$bound" "$(ratio "$gate" "$bound")"
      fi
    done
  done
  echo
done

echo "== 1 client, simple protocol: average latency"
ld=$(bench_out direct "$PGPORT" "$SVC_PW" simple 1 | lat_of)
lb=$(bench_out pgbouncer "$BOUNCER_PORT" "$SVC_PW" simple 1 | lat_of)
lg=$(bench_out gatehouse "$GH_PORT" "$TOKEN" simple 1 | lat_of)
printf "direct %s ms, pgbouncer %s ms, gatehouse %s ms (%sx pgbouncer, %sx direct)\n\n" \
  "$ld" "$lb" "$lg" "$(ratio "$lg" "$lb")" "$(ratio "$lg" "$ld")"

echo "== a new connection per transaction (pgbench -C, $CLIENTS clients)"
cd_=$(bench_out direct "$PGPORT" "$SVC_PW" simple "$CLIENTS" -C | tps_of)
cb=$(bench_out pgbouncer "$BOUNCER_PORT" "$SVC_PW" simple "$CLIENTS" -C | tps_of)
cg=$(bench_out gatehouse "$GH_PORT" "$TOKEN" simple "$CLIENTS" -C | tps_of)
printf "direct %.0f tps, pgbouncer %.0f (%sx), gatehouse %.0f (%sx direct)\n\n" \
  "${cd_:-0}" "${cb:-0}" "$(ratio "$cb" "$cd_")" "${cg:-0}" "$(ratio "$cg" "$cd_")"

records=$("$GH" audit export -c "$WORK/gatehouse.toml" | grep -c '"kind":"statement"' || true)
echo "audited statements in the store at the end: $records"
"$GH" audit verify -c "$WORK/gatehouse.toml" >/dev/null 2>&1 && echo "audit chain: verified" || echo "audit chain: verify FAILED"
