#!/bin/bash
# bench/external-worker.sh: steps/s of one external Python worker process against the Go workers of a
# node (workers = 1, then the default 4), on the linear workflow (4 steps of
# trivial arithmetic), counted from the database. Alternating rounds, each
# on a fresh database of the server at 127.0.0.1:5432 (user postgres).
# Usage: go build -o tasker . && N=1000 bench/external-worker.sh
set -u
N=${N:-500}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/results.txt
cd "$(dirname "$0")/.."
for r in 1 2 3; do
  for kind in python go1 go4; do
    db="ext_${kind}_${r}_$$"
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
    url="postgres://postgres@127.0.0.1:5432/$db"
    cfg=$tmp/$kind.toml
    case $kind in
      python) printf '[http]\nlisten = ""\n[namespaces.linear_workflow]\nexternal = true\n' > $cfg ;;
      go1) printf '[http]\nlisten = ""\n[namespaces.linear_workflow]\nworkers = 1\n' > $cfg ;;
      go4) printf '[http]\nlisten = ""\n' > $cfg ;;
    esac
    TASKER_DATABASE_URL=$url TASKER_ENV=development TASKER_LOG_LEVEL=warn "${TASKER:-./tasker}" node --config $cfg > $tmp/node.log 2>&1 &
    nodepid=$!
    until psql "$url" -qtAc "SELECT 1 FROM tasker.worker_contract" 2>/dev/null | grep -q 1; do sleep 0.2; done
    if [ $kind = python ]; then
      /usr/bin/python3 examples/workers/python/worker.py --database-url "$url" --poll 1 linear_workflow 2>$tmp/worker.log &
      wpid=$!
    fi
    psql "$url" -qc "SELECT pgmq.send_batch('orchestration_task_requests', (SELECT array_agg(jsonb_build_object('request_id', gen_random_uuid(), 'namespace', 'linear_workflow', 'name', 'mathematical_sequence', 'context', jsonb_build_object('even_number', 6))) FROM generate_series(1, $N)))" >/dev/null
    until [ "$(psql "$url" -qtAc "SELECT count(*) FROM tasker.tasks WHERE state = 'complete'")" = "$N" ]; do sleep 0.5; done
    rate=$(psql "$url" -qtAc "SELECT round(count(*) / extract(epoch FROM max(finished_at) - min(last_attempted_at)))::int FROM tasker.steps")
    echo "$kind round $r: $rate steps/s" | tee -a "$out"
    [ $kind = python ] && kill $wpid && wait $wpid 2>/dev/null
    kill $nodepid; wait $nodepid 2>/dev/null
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db" >/dev/null
  done
done
