#!/usr/bin/env bash
# Streams a 1M-row result holding card numbers through Gatehouse with masking on (column rule
# on card_number, the PAN detector over every text value) and compares it with the same
# query made directly, in one run. Prints wall times, the ratio (target: under 1.3x) and the
# gateway's peak resident memory (results are streamed row by row, so it stays flat).
#
#   bash bench/masking.sh                # 1M rows
#   ROWS=200000 bash bench/masking.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${ROWS:-1000000}
REPEAT=${REPEAT:-3}
WORK=$(mktemp -d /tmp/gatehouse-maskbench.XXXXXX)
chmod 755 "$WORK"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need psql; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  else
    echo "psql and PostgreSQL are required (apt-get install postgresql)" >&2; exit 1
  fi
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -p gatehouse >/dev/null 2>&1 || cargo build --release -p gatehouse
GH=$ROOT/target/release/gatehouse

PGPORT=$(free_port); GH_PORT=$(free_port); ADMIN_PORT=$(free_port)
SVC_PW="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
echo "superpw" > "$WORK/pw"; [ "$(id -u)" = 0 ] && chown postgres "$WORK/pw"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A scram-sha-256 --pwfile="$WORK/pw" --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=256MB" start >/dev/null

cleanup() {
  [ -n "${GH_PID:-}" ] && kill "$GH_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export PGPASSWORD=superpw
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE ROLE bench LOGIN PASSWORD '$SVC_PW'" -c "CREATE DATABASE bench OWNER bench"
# Luhn-valid 16-digit Visa-range numbers; a quarter of the notes quote the card too.
PGPASSWORD=$SVC_PW psql -q -h 127.0.0.1 -p "$PGPORT" -U bench bench <<SQL
CREATE FUNCTION luhn_complete(body text) RETURNS text LANGUAGE sql IMMUTABLE AS \$\$
  SELECT body || ((10 - sum(CASE WHEN (length(body) - k + 1) % 2 = 1
                                 THEN (substr(body, k, 1)::int * 2) % 9 + CASE WHEN substr(body, k, 1) = '9' THEN 9 ELSE 0 END
                                 ELSE substr(body, k, 1)::int END) % 10) % 10)::text
  FROM generate_series(1, length(body)) AS k
\$\$;
CREATE TABLE cards AS
  SELECT i AS id, luhn_complete('4' || lpad(i::text, 14, '0')) AS card_number,
         round((i % 1000)::numeric / 100, 2) AS amount,
         CASE WHEN i % 4 = 0 THEN 'order ' || i || ' paid with ' || luhn_complete('5' || lpad(i::text, 14, '0'))
              ELSE 'order ' || i || ' delivered to the front desk' END AS note
  FROM generate_series(1, $ROWS) AS i;
ANALYZE cards;
SQL

cat > "$WORK/gatehouse.toml" <<TOML
data_dir = "./gh-data"
[listen]
postgres = "127.0.0.1:$GH_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
[audit]
record_results = "${RECORD_RESULTS:-masked}"
[[connection]]
name = "bench"
upstream = "127.0.0.1:$PGPORT"
database = "bench"
user = "bench"
password_env = "BENCH_DB_PASSWORD"
upstream_tls = "disable"
allow_groups = ["bench"]
[[mask]]
columns = ["public.cards.card_number"]
detectors = ["pan"]
style = "last4"
TOML
BENCH_DB_PASSWORD=$SVC_PW GATEHOUSE_LOG=warn "$GH" serve -c "$WORK/gatehouse.toml" 2>"$WORK/gatehouse.log" &
GH_PID=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$GH_PORT) 2>/dev/null && break
  sleep 0.1
done
TOKEN=$("$GH" token issue -c "$WORK/gatehouse.toml" --subject bench --group bench --ttl 1h)

SQL="SELECT id, card_number, amount, note FROM cards"
rss_start=$(awk '/VmRSS/ {print $2, $3}' "/proc/$GH_PID/status")
timed() { # port password command...
  local port=$1 pw=$2; shift 2
  local best=""
  for _ in $(seq "$REPEAT"); do
    local t0 t1
    t0=$(date +%s.%N)
    PGPASSWORD=$pw psql -X -q -At -h 127.0.0.1 -p "$port" -U bench "$@" >/dev/null
    t1=$(date +%s.%N)
    local t; t=$(echo "$t1 - $t0" | bc -l)
    if [ "$port" = "$GH_PORT" ]; then awk '/VmRSS/ {printf " %s", $2}' "/proc/$GH_PID/status" >>"$WORK/rss"; fi
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  echo "$best"
}

# What the client gets: masked, and nothing left in clear.
sample=$(PGPASSWORD=$TOKEN psql -X -At -h 127.0.0.1 -p "$GH_PORT" -U bench bench -c "$SQL ORDER BY id LIMIT 4 OFFSET 2")
printf "sample through the gateway:\n%s\n\n" "$sample"
rss_first=$(awk '/VmRSS/ {print $2, $3}' "/proc/$GH_PID/status")
leaks=$(PGPASSWORD=$TOKEN psql -X -At -h 127.0.0.1 -p "$GH_PORT" -U bench bench -c "$SQL" | grep -cE '[0-9]{13}' || true)
[ "$leaks" = 0 ] || { echo "FAILED: $leaks rows through the gateway still hold a 13+ digit run" >&2; exit 1; }

printf "%s rows; best of %s runs; psql -At to /dev/null\n\n" "$ROWS" "$REPEAT"
printf "%-28s %10s %10s %8s\n" path direct gatehouse ratio
for variant in "SELECT (DataRow, text)" "COPY TO STDOUT (CopyData, text)"; do
  if [[ $variant == SELECT* ]]; then
    d=$(timed "$PGPORT" "$SVC_PW" -d bench -c "$SQL")
    g=$(timed "$GH_PORT" "$TOKEN" -d bench -c "$SQL")
  else
    d=$(timed "$PGPORT" "$SVC_PW" -d bench -c "\\copy cards TO '/dev/null'")
    g=$(timed "$GH_PORT" "$TOKEN" -d bench -c "\\copy cards TO '/dev/null'")
  fi
  printf "%-28s %9.2fs %9.2fs %8.2f\n" "$variant" "$d" "$g" "$(echo "$g / $d" | bc -l)"
done
peak=$(awk '/VmHWM/ {print $2, $3}' "/proc/$GH_PID/status")
echo
echo "gateway resident memory after each gatehouse run (kB):$(cat "$WORK/rss" 2>/dev/null)"
echo "gateway peak resident memory (VmHWM): $peak (resident at start: $rss_start; after the first small query: $rss_first)"
echo "rows of the full result still holding a 13+ digit run: $leaks (of $ROWS)"
