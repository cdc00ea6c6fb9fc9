#!/usr/bin/env bash
# Runs the whole benchmark suite one script after the other (never two at once: 2 cores) and keeps
# each script's output in $LOGS. `bench/run_all.sh --quick` passes --quick to every script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
LOGS=${LOGS:-${TMPDIR:-/tmp}/retryopt-bench/logs}
mkdir -p "$LOGS"
for script in decision_latency batch_throughput training load; do
  echo "== bench/$script.py $* (log: $LOGS/$script.log)"
  start=$(date +%s)
  $PY "bench/$script.py" "$@" 2>&1 | tee "$LOGS/$script.log"
  echo "== bench/$script.py took $(( $(date +%s) - start )) s"
done
