#!/bin/bash
# bench/alternate.sh: burn-downs of two (or more) tasker binaries in alternating rounds,
# one line per run: steps/s, PostgreSQL and node CPU per step, rows and WAL bytes written
# per step, allocations per step, commits per step and dispatch latency.
# Each run gets a fresh database of the server at PORT on 127.0.0.1 (user postgres, its
# settings untouched), or with PORT=embedded a fresh folder and the embedded server.
# Usage: TASKS=20000 ROUNDS=3 PORT=5432 PATTERN=linear bench/alternate.sh OLD_TASKER NEW_TASKER
set -u
TASKS=${TASKS:-20000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-5432}
PATTERN=${PATTERN:-linear}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[http]\nlisten = ""\n' > "$tmp/bench.toml"
for r in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    out="$tmp/run.json"
    if [ "$PORT" = embedded ]; then
      dir=$(mktemp -d "$tmp/embedded.XXXX")
      (cd "$dir" && env -u TASKER_DATABASE_URL "$bin" bench --config "$tmp/bench.toml" --mode burn-down \
        --tasks "$TASKS" --pattern "$PATTERN" --json > "$out" 2> "$tmp/run.log") || { echo "$bin failed:"; tail -5 "$tmp/run.log"; continue; }
      rm -rf "$dir"
    else
      db="alternate_${r}_$$"
      psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE $db" >/dev/null
      TASKER_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/$db" "$bin" bench --config "$tmp/bench.toml" \
        --mode burn-down --tasks "$TASKS" --pattern "$PATTERN" --json > "$out" 2> "$tmp/run.log" \
        || { echo "$bin failed:"; tail -5 "$tmp/run.log"; }
      psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "DROP DATABASE $db" >/dev/null
    fi
    python3 - "$bin" "$r" "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[3]))
p = d["dispatch_ms"]
print(f'round {sys.argv[2]} {sys.argv[1]:<24} {d["steps_per_sec"]:7.0f} steps/s  pg cpu {d.get("pg_cpu_ms_per_step", 0):.3f}  '
      f'node cpu {d["node_cpu_ms_per_step"]:.3f} ms/step  rows {d["pg_rows_written_per_step"]:.2f}  wal {d["pg_wal_bytes_per_step"]:.0f} B  '
      f'allocs {d["allocs_per_step"]:.0f}  commits {d["pg_commits_per_step"]:.3f}  dispatch p50 {p["p50"]:.0f} p99 {p["p99"]:.0f} ms', flush=True)
PY
  done
done
