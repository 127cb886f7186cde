#!/bin/bash
# bench/flow-cost.sh: what flow control costs when its limits are configured but never
# reached. Each round runs `tasker bench --mode burn-down` on a fresh database of the
# server at 127.0.0.1:5432 (user postgres, its settings untouched), once with no limit
# and once with [namespaces.bench] max_in_flight far above the bench's workers (every
# step then waits, throttled, for an admission that always finds a slot), alternating;
# it prints steps/s, dispatch latency, PostgreSQL CPU and rows written per step of
# both, and the ratio of each round's pair.
# MODE=steady runs `--mode steady --rate RATE --duration DURATION` instead, where the
# limit is far from reached too and the cost shows in CPU and latency, not steps/s.
# Usage: go build -o tasker . && TASKS=5000 bench/flow-cost.sh
set -u
MODE=${MODE:-burn-down}
RATE=${RATE:-100}
DURATION=${DURATION:-30s}
TASKS=${TASKS:-5000}
ROUNDS=${ROUNDS:-3}
PATTERN=${PATTERN:-linear}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$(dirname "$0")/.."
printf '[http]\nlisten = ""\n' > "$tmp/off.toml"
printf '[http]\nlisten = ""\n[namespaces.bench]\nworkers = 64\nmax_in_flight = 1000000\n' > "$tmp/on.toml"
for r in $(seq 1 "$ROUNDS"); do
  for kind in off on; do
    db="flow_${kind}_${r}_$$"
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
    TASKER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" "${TASKER:-./tasker}" bench --config "$tmp/$kind.toml" \
      --mode "$MODE" --tasks "$TASKS" --rate "$RATE" --duration "$DURATION" --pattern "$PATTERN" --json \
      > "$tmp/$kind-$r.json" 2> "$tmp/$kind-$r.log" || { echo "round $r $kind failed:"; tail -5 "$tmp/$kind-$r.log"; }
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $db" >/dev/null
  done
  python3 - "$tmp/off-$r.json" "$tmp/on-$r.json" "$r" <<'PY'
import json, sys
off, on = (json.load(open(p)) for p in sys.argv[1:3])
for kind, rep in (("off", off), ("on", on)):
    d = rep["dispatch_ms"]
    print(f'round {sys.argv[3]} limits {kind:>3}: {rep["steps_per_sec"]:7.1f} steps/s, dispatch p50 {d["p50"]:.1f} ms p99 {d["p99"]:.1f} ms, '
          f'pg cpu {rep.get("pg_cpu_ms_per_step", 0):.2f} ms/step, rows {rep["pg_rows_written_per_step"]:.2f}/step')
print(f'round {sys.argv[3]} on/off: {on["steps_per_sec"] / off["steps_per_sec"]:.3f}')
PY
done
