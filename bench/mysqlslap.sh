#!/usr/bin/env bash
# Compares MySQL clients direct to a throwaway MariaDB and through Gatehouse, in one run:
# - `mysqlslap` throughput at each of CLIENT_SET (default "8 32") clients, a point SELECT of a
#   masked column, every statement audited write-ahead (audit.durability = DURABILITY, default
#   os; audit.record_results = summary);
# - 1-client latency (the same query, sequentially);
# - a masked read of ROWS (default 1 000 000) rows with the mariadb client (--quick: streamed),
#   its time direct and through the gateway, and the gateway's peak RSS during it.
# No MySQL pooler is in Debian (ProxySQL is not packaged), so the peer column is absent.
#
#   bash bench/mysqlslap.sh
#   QUERIES=20000 CLIENT_SET="8" bash bench/mysqlslap.sh
#   PROFILE=1 bash bench/mysqlslap.sh     # perf profile of the gateway during an 8-client run (TOP=N)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLIENT_SET=${CLIENT_SET:-8 32}
QUERIES=${QUERIES:-40000}
ROWS=${ROWS:-1000000}
WORK=$(mktemp -d /tmp/gatehouse-bench-my.XXXXXX)
chmod 755 "$WORK"

MARIADBD=$(for p in /usr/sbin/mariadbd /usr/bin/mariadbd; do [ -x "$p" ] && echo "$p" && break; done)
[ -n "$MARIADBD" ] && command -v mysqlslap >/dev/null ||
  { echo "mariadb-server and mariadb-client are required" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -p gatehouse >/dev/null 2>&1 || cargo build --release -p gatehouse
GH=$ROOT/target/release/gatehouse

MY_PORT=$(free_port); GH_PORT=$(free_port); GH_PG_PORT=$(free_port); ADMIN_PORT=$(free_port)
SVC_PW="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
USER_OPT=()
if [ "$(id -u)" = 0 ]; then chown mysql "$WORK"; USER_OPT=(--user=mysql); fi
mariadb-install-db --no-defaults --datadir="$WORK/data" --auth-root-authentication-method=normal \
  --skip-test-db "${USER_OPT[@]}" >/dev/null 2>&1
"$MARIADBD" --no-defaults --datadir="$WORK/data" --socket="$WORK/sock" --port="$MY_PORT" \
  --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=256M \
  --max-connections=200 --log-error="$WORK/err.log" --pid-file="$WORK/pid" "${USER_OPT[@]}" >/dev/null 2>&1 &
root() { mariadb --no-defaults --socket="$WORK/sock" -u root "$@"; }
for _ in $(seq 600); do root -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done

cleanup() {
  [ -n "${GH_PID:-}" ] && kill "$GH_PID" 2>/dev/null || true
  [ -f "$WORK/pid" ] && kill "$(cat "$WORK/pid")" 2>/dev/null || true
  sleep 1
  rm -rf "$WORK"
}
trap cleanup EXIT

root <<SQL
CREATE USER 'bench'@'%' IDENTIFIED BY '$SVC_PW';
CREATE DATABASE shop;
GRANT ALL ON shop.* TO 'bench'@'%';
USE shop;
CREATE TABLE shop.payments (id int PRIMARY KEY, card_number varchar(19), amount decimal(10,2));
INSERT INTO shop.payments SELECT seq, '4111111111111111', seq / 100 FROM seq_1_to_1000;
CREATE TABLE shop.big (id int PRIMARY KEY, card_number varchar(19), note varchar(40));
INSERT INTO shop.big SELECT seq, '4111111111111111', 'a row of the big table' FROM seq_1_to_$ROWS;
SQL

cat > "$WORK/gatehouse.toml" <<TOML
data_dir = "./gh-data"
[listen]
postgres = "127.0.0.1:$GH_PG_PORT"
mysql = "127.0.0.1:$GH_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
max_connections = 1000
[audit]
record_results = "summary"
durability = "${DURABILITY:-os}"
[[connection]]
name = "shop"
kind = "mysql"
upstream = "127.0.0.1:$MY_PORT"
database = "shop"
user = "bench"
password_env = "BENCH_DB_PASSWORD"
upstream_tls = "disable"
allow_groups = ["bench"]
[[mask]]
connections = ["shop"]
columns = ["shop.payments.card_number", "shop.big.card_number"]
style = "last4"
TOML
start_gatehouse() {
  BENCH_DB_PASSWORD=$SVC_PW GATEHOUSE_LOG=warn "$GH" serve -c "$WORK/gatehouse.toml" 2>>"$WORK/gatehouse.log" &
  GH_PID=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$GH_PORT) 2>/dev/null && break; sleep 0.1; done
}
stop_gatehouse() { kill "$GH_PID" 2>/dev/null || true; wait "$GH_PID" 2>/dev/null || true; GH_PID=; }
start_gatehouse
TOKEN=$("$GH" token issue -c "$WORK/gatehouse.toml" --subject mysqlslap --group bench --ttl 1h)

QUERY="SELECT id, card_number, amount FROM payments WHERE id = 42"
if [ -n "${PROFILE:-}" ]; then
  command -v perf >/dev/null 2>&1 || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
  mysqlslap --no-defaults -h 127.0.0.1 -P "$GH_PORT" -u bench -p"$TOKEN" --skip-ssl --create-schema=shop \
    --no-drop --concurrency=8 --iterations=1 --number-of-queries=$((QUERIES * 2)) --query="$QUERY" >/dev/null 2>&1 &
  SLAP_PID=$!
  sleep 1
  perf record -F 999 -g -o "$WORK/perf.data" -p "$GH_PID" -- sleep 4 2>/dev/null
  wait "$SLAP_PID" || true
  perf report -i "$WORK/perf.data" --no-children -g none --sort symbol --stdio 2>/dev/null |
    grep -v '^#' | grep '%' | head -"${TOP:-45}"
  exit 0
fi
# Queries per second of one mysqlslap run: port password clients queries
slap() {
  local secs
  secs=$(mysqlslap --no-defaults -h 127.0.0.1 -P "$1" -u bench -p"$2" --skip-ssl --create-schema=shop \
    --no-drop --concurrency="$3" --iterations=1 --number-of-queries="$4" --query="$QUERY" 2>/dev/null |
    awk '/Average number of seconds/ { print $(NF-1) }')
  awk -v n="$4" -v s="$secs" 'BEGIN { printf "%.0f", n / s }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$GH_PID/stat"; }
HZ=$(getconf CLK_TCK)

printf '\n%-28s %12s %12s %8s %14s\n' "run" "direct q/s" "gatehouse" "ratio" "GH CPU/stmt"
for c in $CLIENT_SET; do
  d=$(slap "$MY_PORT" "$SVC_PW" "$c" "$QUERIES")
  before=$(cpu_ticks)
  g=$(slap "$GH_PORT" "$TOKEN" "$c" "$QUERIES")
  after=$(cpu_ticks)
  us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$QUERIES" 'BEGIN { printf "%.0f us", t / hz * 1e6 / n }')
  printf '%-28s %12s %12s %8s %14s\n' "$c clients, point select" "$d" "$g" \
    "$(awk -v a="$g" -v b="$d" 'BEGIN { printf "%.2f", a / b }')" "$us"
done
n=$((QUERIES / 10))
d=$(slap "$MY_PORT" "$SVC_PW" 1 "$n")
g=$(slap "$GH_PORT" "$TOKEN" 1 "$n")
printf '%-28s %12s %12s %8s\n' "1 client, latency (ms)" \
  "$(awk -v q="$d" 'BEGIN { printf "%.3f", 1000 / q }')" "$(awk -v q="$g" 'BEGIN { printf "%.3f", 1000 / q }')" \
  "$(awk -v a="$d" -v b="$g" 'BEGIN { printf "%.2f", a / b }')"

# The big masked read, streamed by the client (--quick); the gateway restarted so that its peak
# RSS is this read's.
stop_gatehouse; start_gatehouse
read_big() { # port password
  local t0 t1
  t0=$(date +%s.%N)
  mariadb --no-defaults -h 127.0.0.1 -P "$1" -u bench -p"$2" --skip-ssl --quick -N -B shop \
    -e "SELECT id, card_number, note FROM big" >"$WORK/big.out"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
d=$(read_big "$MY_PORT" "$SVC_PW")
g=$(read_big "$GH_PORT" "$TOKEN")
rows=$(wc -l <"$WORK/big.out")
masked=$(grep -c '\*\*\*\*\*\*\*\*\*\*\*\*1111' "$WORK/big.out" || true)
rss=$(awk '/VmHWM/ { printf "%.0f MB", $2 / 1024 }' "/proc/$GH_PID/status")
printf '%-28s %11ss %11ss %8s %14s\n' "$ROWS-row masked read" "$d" "$g" \
  "$(awk -v a="$g" -v b="$d" 'BEGIN { printf "%.2f", a / b }')" "peak RSS $rss"
echo "rows through the gateway: $rows (masked: $masked)"
