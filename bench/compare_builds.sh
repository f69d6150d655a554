#!/usr/bin/env bash
# Two module builds side by side: server µs/call (INFO commandstats) of a plain SET of a
# 500-byte value and of a QA.GET hit on a 500-byte answer, each build on its own redis-server
# pinned to core 0, redis-benchmark (-c 50 -n 200000 -P 16) on core 1, builds alternating.
#
#   bench/compare_builds.sh OLD.so NEW.so [REPS=5]
# Traffic to 127.0.0.1 only; stops only the servers it started.
set -euo pipefail
old=$1 new=$2 reps=${3:-5}
a=$(head -c 500 /dev/zero | tr '\0' x)
for _ in $(seq 1 "$reps"); do
    for v in old new; do
        so=${!v}
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        taskset -c 0 redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --loadmodule "$so" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 50); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
        redis-cli -p "$port" QA.SET bench "What is our refund policy?" "$a" >/dev/null
        redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
        taskset -c 1 redis-benchmark -p "$port" -c 50 -n 200000 -P 16 -q SET k "$a" >/dev/null
        taskset -c 1 redis-benchmark -p "$port" -c 50 -n 200000 -P 16 -q \
            QA.GET bench "What is our refund policy?" >/dev/null
        echo "$v $(redis-cli -p "$port" INFO commandstats | grep -E 'cmdstat_(set|qa.get):' |
            sed -E 's/cmdstat_([a-z.]+):.*usec_per_call=([0-9.]+).*/\1=\2/' | sort | tr '\n' ' ')"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
