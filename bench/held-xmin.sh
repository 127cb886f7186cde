#!/bin/bash
# bench/held-xmin.sh: what a transaction that holds the xmin horizon does to
# dispatch. On a fresh database of a server it runs a steady linear bench
# (`tasker bench --mode steady --pattern linear --keep`); from --before to
# --before + --hold a psql session holds a REPEATABLE READ snapshot, then
# commits, and the run goes on for --after. Every --sample seconds it reads
# from the database the dead tuples and sizes of the queue tables (pgmq.q_*),
# tasker.steps and tasker.tasks, and times one read of the namespace queue
# (EXPLAIN ANALYZE of the node's read statement, rolled back: its time and
# the buffers it touched) and this machine's load average. At the end it
# prints, per window of --sample seconds, steps finished per second and the
# dispatch latency p50/p99 (a step's enqueued_at to its last_attempted_at),
# from the rows the run kept, beside the samples, and the time from the
# release of the snapshot until steps/s and p99 are back within 10% of the
# before phase; "waiting" is the steps enqueued and not yet started at a
# window's end, and the backlog is back when it is within 10% of the before
# phase's highest.
#
# Usage: bench/held-xmin.sh [--server URL] [--tasker BINARY] [--rate TASKS/S]
#          [--before 2m] [--hold 10m] [--after 3m] [--sample 30s] [--out DIR]
#          [--keep-db]
#        bench/held-xmin.sh --analyze DIR   (the table again, from the --out DIR
#          of a run made with --keep-db)
#   --server  a postgres:// URL of a role that may create databases, with a
#             database path (default postgres://postgres@127.0.0.1:5432/postgres)
#   --tasker  the binary to measure (default: built from this tree)
#   --out     a folder for the bench log, the samples and the table (default:
#             a temporary one, removed at the end)
# A short run to check the script: bench/held-xmin.sh --before 1m --hold 2m --after 1m
set -euo pipefail

server=postgres://postgres@127.0.0.1:5432/postgres
tasker=
rate=290
before=2m
hold=10m
after=3m
sample=30s
out=
keepdb=0
analyze_dir=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --server) server=$2; shift 2 ;;
    --tasker) tasker=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --before) before=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --sample) sample=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --keep-db) keepdb=1; shift ;;
    --analyze) analyze_dir=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "held-xmin: unknown argument $1" >&2; usage ;;
  esac
done

# seconds turns 90, 90s, 2m or 1h into whole seconds.
seconds() {
  case $1 in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo $(( ${1%s} )) ;;
    *) echo $(( $1 )) ;;
  esac
}
before_s=$(seconds "$before")
hold_s=$(seconds "$hold")
after_s=$(seconds "$after")
sample_s=$(seconds "$sample")
total_s=$(( before_s + hold_s + after_s ))

# analyze prints the table of a run: one row per whole window of the
# submitting run, from the kept rows and the samples.
analyze() {
psql "$url" -qX -v ON_ERROR_STOP=1 -P footer=off >"$out/table.txt" <<SQL
CREATE TEMP TABLE s (ts float8, kind text, name text, live bigint, dead bigint, bytes bigint, extra float8);
\copy s FROM '$out/samples.csv' WITH (FORMAT csv)
CREATE TEMP TABLE w AS
WITH win AS (
  SELECT n, to_timestamp($t0 + n * $sample_s) AS b, to_timestamp($t0 + (n + 1) * $sample_s) AS e
  FROM generate_series(0, $total_s / $sample_s - 1) AS n
), fin AS (
  SELECT win.n, count(st.finished_at)::float8 / $sample_s AS sps
  FROM win LEFT JOIN tasker.steps st ON st.finished_at >= win.b AND st.finished_at < win.e GROUP BY win.n
), disp AS (
  SELECT win.n,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM st.last_attempted_at - st.enqueued_at)) * 1000 AS p50,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM st.last_attempted_at - st.enqueued_at)) * 1000 AS p99
  FROM win LEFT JOIN tasker.steps st ON st.last_attempted_at >= win.b AND st.last_attempted_at < win.e GROUP BY win.n
), waiting AS (
  SELECT win.n, count(st.step_uuid) AS waiting
  FROM win LEFT JOIN tasker.steps st ON st.enqueued_at < win.e AND (st.last_attempted_at IS NULL OR st.last_attempted_at >= win.e)
  GROUP BY win.n
), smp AS (
  SELECT win.n,
    sum(s.dead) FILTER (WHERE s.kind = 'table' AND s.name LIKE 'pgmq.%') AS q_dead,
    sum(s.bytes) FILTER (WHERE s.kind = 'table' AND s.name LIKE 'pgmq.%') AS q_bytes,
    sum(s.bytes) FILTER (WHERE s.kind = 'index' AND s.name = 'pgmq.q_bench_queue_pkey') AS pkey_bytes,
    sum(s.dead) FILTER (WHERE s.kind = 'table' AND s.name = 'tasker.steps') AS steps_dead,
    sum(s.bytes) FILTER (WHERE s.kind = 'table' AND s.name = 'tasker.steps') AS steps_bytes,
    max(s.extra) FILTER (WHERE s.kind = 'read') AS read_ms,
    max(s.bytes) FILTER (WHERE s.kind = 'read') AS read_buffers,
    max(s.extra) FILTER (WHERE s.kind = 'load') AS load
  FROM win LEFT JOIN s ON s.ts >= extract(epoch FROM win.b) AND s.ts < extract(epoch FROM win.e) GROUP BY win.n
)
SELECT win.n, win.b, win.e,
  CASE WHEN extract(epoch FROM win.b) + $sample_s / 2.0 < $hold_start THEN 'before'
       WHEN extract(epoch FROM win.b) + $sample_s / 2.0 < $hold_end THEN 'during' ELSE 'after' END AS phase,
  fin.sps, disp.p50, disp.p99, waiting.waiting, smp.q_dead, smp.q_bytes, smp.pkey_bytes, smp.steps_dead, smp.steps_bytes, smp.read_ms, smp.read_buffers, smp.load
FROM win JOIN fin USING (n) JOIN disp USING (n) JOIN waiting USING (n) JOIN smp USING (n);
\pset format aligned
SELECT to_char(b, 'HH24:MI:SS') AS "window", phase,
  round(sps::numeric) AS "steps/s", round(p50::numeric, 1) AS "p50 ms", round(p99::numeric, 1) AS "p99 ms",
  waiting AS "waiting", q_dead AS "queue dead", pg_size_pretty(q_bytes) AS "queue size", pg_size_pretty(pkey_bytes) AS "bench pkey",
  steps_dead AS "steps dead", pg_size_pretty(steps_bytes) AS "steps size", round(read_ms::numeric, 2) AS "read ms", read_buffers AS "read buffers", load AS "load avg"
FROM w ORDER BY n;
-- The before phase without its first window (warm-up) is the reference.
CREATE TEMP TABLE ref AS
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY sps) AS sps, percentile_cont(0.5) WITHIN GROUP (ORDER BY p99) AS p99,
  max(waiting) AS waiting
FROM w WHERE phase = 'before' AND n > 0;
SELECT phase, round(avg(sps)::numeric) AS "steps/s (mean)", round(min(sps)::numeric) AS "steps/s (min)",
  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY p99))::numeric, 1) AS "p99 ms (median)", round(max(p99)::numeric, 1) AS "p99 ms (max)",
  round(max(read_ms)::numeric, 2) AS "read ms (max)", max(q_dead) AS "queue dead (max)"
FROM w WHERE phase <> 'before' OR n > 0 GROUP BY phase ORDER BY min(n);
-- Recovered: the first window after the release, with the one after it,
-- within 10% of the reference in steps/s and no more than 10% above its p99.
WITH ok AS (
  SELECT w.n, w.e, abs(w.sps - ref.sps) <= 0.1 * ref.sps AND w.p99 <= 1.1 * ref.p99 AS ok
  FROM w, ref WHERE w.phase = 'after'
)
SELECT coalesce((SELECT round(extract(epoch FROM a.e)::numeric - $hold_end::numeric) || ' s (end of the first window back, then the next one too)'
                 FROM ok a LEFT JOIN ok b ON b.n = a.n + 1
                 WHERE a.ok AND coalesce(b.ok, true) ORDER BY a.n LIMIT 1),
                'not back within the run') AS "recovery after release",
  coalesce((SELECT round(extract(epoch FROM w.e)::numeric - $hold_end::numeric) || ' s'
            FROM w WHERE w.phase = 'after' AND w.waiting <= 1.1 * ref.waiting ORDER BY w.n LIMIT 1),
           'not within the run') AS "backlog back to the before level",
  round(ref.sps::numeric) AS "reference steps/s", round(ref.p99::numeric, 1) AS "reference p99 ms"
FROM ref;
SQL
}

if [ -n "$analyze_dir" ]; then
  out=$analyze_dir
  # shellcheck source=/dev/null
  . "$out/run.env"
  analyze
  cat "$out/table.txt"
  exit 0
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
if [ -z "$out" ]; then
  out=$tmp/out
fi
mkdir -p "$out"

if [ -z "$tasker" ]; then
  tasker=$tmp/tasker
  (cd "$repo" && go build -o "$tasker" .)
fi

db=xmin_$(date +%Y%m%d%H%M%S)_$$
base=${server%%\?*}
query=
if [ "$base" != "$server" ]; then
  query="?${server#*\?}"
fi
url="${base%/*}/$db$query"

pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "$keepdb" = 0 ]; then
    psql "$server" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

q() { psql "$url" -qXAt -v ON_ERROR_STOP=1 "$@"; }

psql "$server" -qXc "CREATE DATABASE $db" >/dev/null
echo "held-xmin: database $db, rate $rate tasks/s, before ${before_s}s, hold ${hold_s}s, after ${after_s}s, windows of ${sample_s}s" >&2
echo "held-xmin: tasker $tasker ($("$tasker" version 2>/dev/null | head -1))" >&2

TASKER_DATABASE_URL=$url TASKER_ENV=development "$tasker" bench --mode steady --rate "$rate" \
  --duration "${total_s}s" --pattern linear --keep >"$out/bench.log" 2>&1 &
benchpid=$!
pids+=("$benchpid")

# t0 is the creation of the first task (database clock).
t0=
until [ -n "$t0" ]; do
  if ! kill -0 "$benchpid" 2>/dev/null; then
    echo "held-xmin: the bench ended before the first task; its log:" >&2
    cat "$out/bench.log" >&2
    exit 1
  fi
  sleep 0.2
  t0=$(q -c "SELECT extract(epoch FROM min(created_at)) FROM tasker.tasks" 2>/dev/null || true)
done
started=$(date +%s.%N)
at() { # at SECONDS: sleep until SECONDS after t0 (on this machine's clock)
  local d
  d=$(awk -v s="$started" -v o="$1" -v n="$(date +%s.%N)" 'BEGIN { d = s + o - n; print (d > 0 ? d : 0) }')
  sleep "$d"
}

# The read the node makes of its namespace queue (queue/statements.go), as
# the node's sessions plan it (store.SessionSettings), rolled back.
read_sql="SET enable_seqscan = off; SET jit = off; BEGIN;
EXPLAIN (ANALYZE, BUFFERS) UPDATE pgmq.q_bench_queue SET vt = clock_timestamp() + make_interval(secs => 30),
  read_ct = read_ct + 1, last_read_at = clock_timestamp()
  WHERE msg_id = ANY (ARRAY(SELECT msg_id FROM pgmq.q_bench_queue WHERE vt <= clock_timestamp()
  ORDER BY msg_id LIMIT 50 FOR UPDATE SKIP LOCKED))
  RETURNING msg_id, read_ct, enqueued_at, vt, message, headers;
ROLLBACK;"

# sampler writes one CSV row per table, index and read probe:
# ts, kind, name, live, dead, bytes, extra (autovacuum count; read: ms).
sampler() {
  local i=0 ts plan ms buf
  while :; do
    at $(( i * sample_s + sample_s / 2 ))
    ts=$(q -c "SELECT extract(epoch FROM clock_timestamp())")
    q -F, -c "SELECT $ts, 'table', s.schemaname || '.' || s.relname, s.n_live_tup, s.n_dead_tup,
        pg_total_relation_size(s.relid), s.autovacuum_count + s.vacuum_count
      FROM pg_stat_user_tables s
      WHERE (s.schemaname = 'pgmq' AND s.relname LIKE 'q\\_%') OR (s.schemaname = 'tasker' AND s.relname IN ('steps', 'tasks'))
      UNION ALL
      SELECT $ts, 'index', i.schemaname || '.' || i.indexrelname, 0, 0, pg_relation_size(i.indexrelid), 0
      FROM pg_stat_user_indexes i
      WHERE (i.schemaname = 'pgmq' AND i.relname LIKE 'q\\_%') OR (i.schemaname = 'tasker' AND i.relname IN ('steps', 'tasks'))" >>"$out/samples.csv"
    plan=$(q -c "$read_sql" 2>&1 || true)
    ms=$(sed -n 's/.*Execution Time: \([0-9.]*\) ms.*/\1/p' <<<"$plan")
    buf=$(sed -n '2s/.*shared hit=\([0-9]*\).*/\1/p' <<<"$plan")
    echo "$ts,read,pgmq.q_bench_queue,0,0,${buf:-0},${ms:-0}" >>"$out/samples.csv"
    # The load average of this machine: the server's when it runs here.
    echo "$ts,load,loadavg,0,0,0,$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)" >>"$out/samples.csv"
    i=$(( i + 1 ))
  done
}
: >"$out/samples.csv"
sampler &
pids+=("$!")

# The holder: a snapshot taken at --before, released after --hold.
at "$before_s"
(
  printf 'BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT count(*) FROM tasker.tasks;\n'
  sleep "$hold_s"
  printf 'COMMIT;\n'
) | PGAPPNAME=held-xmin psql "$url" -qXAt >"$out/hold.log" 2>&1 &
holdpid=$!
hold_start=
until [ -n "$hold_start" ]; do
  sleep 0.1
  hold_start=$(q -c "SELECT extract(epoch FROM xact_start) FROM pg_stat_activity
    WHERE application_name = 'held-xmin' AND datname = current_database() AND backend_xmin IS NOT NULL")
done
echo "held-xmin: snapshot held by $(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'held-xmin'") from $(q -c "SELECT to_timestamp($hold_start)")" >&2
wait "$holdpid"
hold_end=$(q -c "SELECT extract(epoch FROM clock_timestamp())")
echo "held-xmin: released at $(q -c "SELECT to_timestamp($hold_end)")" >&2

wait "$benchpid" || { echo "held-xmin: the bench failed; its log:" >&2; cat "$out/bench.log" >&2; exit 1; }
kill "${pids[1]}" 2>/dev/null || true

cat >"$out/run.env" <<ENV
url=$url
t0=$t0
hold_start=$hold_start
hold_end=$hold_end
sample_s=$sample_s
total_s=$total_s
ENV
analyze
cat "$out/table.txt"
echo
grep -E '^(throughput|time|tasks|steps):' "$out/bench.log" || true
