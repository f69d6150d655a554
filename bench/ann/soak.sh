#!/usr/bin/env bash
# Soak of the semantic tier with its HNSW graphs: runs the semantic and verify integration
# suites (and any other test files named in SUITES) RUNS times on each server of SERVERS,
# and counts runs and failures. A failed run's output (with the server's log tail, which
# holds Redis's crash report if a server died) is kept in OUT/fail-<n>.log.
#
#   bench/ann/soak.sh                  # 20 rounds on Redis 7.0, 8.0 and Valkey 8.1
#   RUNS=5 SERVERS=redis-server bench/ann/soak.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-20}
SUITES=${SUITES:-"semantic verify"}
OUT=${OUT:-target/soak}
mkdir -p "$OUT"
if [ -z "${SERVERS:-}" ]; then
  scripts/newer-servers.sh target/servers >/dev/null
  SERVERS="redis-server $PWD/target/servers/bin/redis-server-8 $PWD/target/servers/bin/valkey-server-8"
fi
cargo build --release --lib -q
args=()
for s in $SUITES; do args+=(--test "$s"); done
cargo test --release --no-run -q "${args[@]}" 2>/dev/null
runs=0
fails=0
for round in $(seq 1 "$RUNS"); do
  for server in $SERVERS; do
    runs=$((runs + 1))
    log="$OUT/run.log"
    if QA_TEST_SERVER="$server" cargo test --release -q "${args[@]}" >"$log" 2>&1; then
      echo "round $round $(basename "$server"): ok"
    else
      fails=$((fails + 1))
      cp "$log" "$OUT/fail-$runs.log"
      echo "round $round $(basename "$server"): FAILED (see $OUT/fail-$runs.log)"
    fi
  done
done
echo "soak: $runs runs, $fails failed"
[ "$fails" = 0 ]
