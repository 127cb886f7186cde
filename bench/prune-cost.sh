#!/bin/bash
# bench/prune-cost.sh: what retention's pruning costs a node under load. Each round runs
# `tasker bench --mode steady` on a fresh database of the server at 127.0.0.1:5432 (user
# postgres, its settings untouched) after writing HISTORY finished linear tasks, once
# with the node's pruning on (every 5 s, complete tasks kept 2 minutes: the history is
# due, the run's own tasks are not) and once without, alternating; it prints steps/s and
# dispatch latency of both, and the rows pruning deleted per second (deletes of the
# tasker tables counted by the bench from pg_stat_user_tables).
# Usage: go build -o tasker . && RATE=60 HISTORY=100000 bench/prune-cost.sh
set -u
RATE=${RATE:-60}
HISTORY=${HISTORY:-100000}
DURATION=${DURATION:-60s}
ROUNDS=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$(dirname "$0")/.."
cat > "$tmp/cfg.toml" <<TOML
[http]
listen = ""
[retention]
complete_tasks = "2m"
interval = "5s"
time_budget = "5s"
TOML
for r in $(seq 1 "$ROUNDS"); do
  for kind in off on; do
    db="prune_${kind}_${r}_$$"
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
    flag=""
    [ "$kind" = on ] && flag="--retention"
    TASKER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" "${TASKER:-./tasker}" bench --config "$tmp/cfg.toml" \
      --mode steady --rate "$RATE" --duration "$DURATION" --pattern linear --history "$HISTORY" $flag --json \
      > "$tmp/$kind-$r.json" 2> "$tmp/$kind-$r.log" || { echo "round $r $kind failed:"; tail -5 "$tmp/$kind-$r.log"; }
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db" >/dev/null
    python3 - "$tmp/$kind-$r.json" "$kind" "$r" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
deleted = sum(t["deletes"] for t in rep.get("pg_tables_written", []) if t["table"].startswith("tasker."))
tasks = sum(t["deletes"] for t in rep.get("pg_tables_written", []) if t["table"] == "tasker.tasks")
d = rep["dispatch_ms"]
print(f'{sys.argv[2]:>3} round {sys.argv[3]}: {rep["steps_per_sec"]:7.1f} steps/s, dispatch p50 {d["p50"]:.1f} ms p99 {d["p99"]:.1f} ms, '
      f'pruned {tasks} tasks / {deleted} rows ({deleted / rep["window_s"]:.0f} rows/s), pg cpu {rep["pg_cpu_ms_per_step"]:.2f} ms/step')
PY
  done
done
