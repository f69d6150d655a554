#!/usr/bin/env bash
# One-command benchmark of redis-qa: builds the module and the demo backend, starts its own
# redis-server and demo backends on free loopback ports, measures (bench/bench.py), profiles the
# hit path (bench/profile_hit.py), writes docs/benchmarks.md and its PNG charts, and stops only
# what it started.
#
#   bench/run.sh                    (or: make bench) every section, into docs/
#   bench/run.sh memory scale       only these sections (or SECTIONS=memory,scale bench/run.sh),
#                                   into bench/out/ unless OUT is set
#
# Sections: hit miss resp stampede client profile memory scale costs stream (bench/README.md);
# charts are drawn for whichever ran (CHARTS=0: none). `costs` (bench/review_costs.py) is what
# the module costs the rest of Redis: unrelated writes with and without the module, and
# QA.INVALIDATE / FLUSHALL ASYNC with a 100k-vector semantic index; it is appended to OUT, as
# `stream` is (bench/stream_bench.py: QA.STREAM's time to the first piece, XADDs, PING).
#
# Settings (environment):
#   SERVER_CPU=0 CLIENT_CPU=1  cores for redis-server (with its module threads) and for every
#                              client (redis-benchmark, python, demo backends); see BENCH-NOTES
#   REPS=5                     repetitions per comparison (median reported)
#   PROFILER=auto|perf|callgrind|none
#   OUT=docs/benchmarks.md      (bench/out/benchmarks.md for a run of some sections only);
#                              the charts go beside it
#   SCALE_SIZES=10000,100000,1000000  entry counts of the scale section
#   CARGO_TARGET_DIR           where cargo builds (default: target/)
#   BENCH_REV=<commit>         benchmark a clean export of that commit instead of the work tree
# Traffic goes to 127.0.0.1 only. Every step is bounded by `timeout`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export SERVER_CPU="${SERVER_CPU:-0}"
export CLIENT_CPU="${CLIENT_CPU:-1}"
export REPS="${REPS:-5}"
export PROFILER="${PROFILER:-auto}"
ALL_SECTIONS="hit,miss,resp,stampede,client,profile,memory,scale,costs,stream"
if [ "$#" -gt 0 ]; then
    SECTIONS="$(IFS=,; echo "$*")"
fi
SECTIONS="${SECTIONS:-$ALL_SECTIONS}"
if [ "$SECTIONS" = "$ALL_SECTIONS" ] || [ "$SECTIONS" = all ]; then
    SECTIONS="$ALL_SECTIONS"
    export OUT="${OUT:-docs/benchmarks.md}"
else
    export OUT="${OUT:-bench/out/benchmarks.md}"
fi
# `costs` runs its own servers after bench.py (bench/review_costs.py).
RUN_COSTS=0
case ",$SECTIONS," in
    *,costs,*) RUN_COSTS=1 ;;
esac
# `stream` too (bench/stream_bench.py, its own server and streaming backend).
RUN_STREAM=0
case ",$SECTIONS," in
    *,stream,*) RUN_STREAM=1 ;;
esac
SECTIONS="$(echo ",$SECTIONS," | sed 's/,costs,/,/g; s/,stream,/,/g; s/^,//; s/,$//')"
[ "${CHARTS:-1}" = 0 ] || [ -z "$SECTIONS" ] || SECTIONS="$SECTIONS,charts"
# Read before anything is pinned (nproc reports the affinity mask).
export BENCH_NPROC="$(nproc)"
# Whole run (excluding the build) must finish within this many seconds.
TOTAL_LIMIT="${TOTAL_LIMIT:-540}"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for tool in redis-server redis-benchmark redis-cli python3 taskset cargo; do
    command -v "$tool" >/dev/null || { log "missing tool: $tool"; exit 1; }
done
if [ "$(nproc)" -lt 2 ] && [ "$SERVER_CPU" != "$CLIENT_CPU" ]; then
    log "only one core: pinning server and client to core 0"
    SERVER_CPU=0 CLIENT_CPU=0
fi

# redis-py (needed), matplotlib (for the charts only: without it the run goes on, chartless).
if ! python3 -c 'import redis' 2>/dev/null; then
    log "installing redis-py"
    timeout 300 python3 -m pip install --quiet redis
fi
if [ "${CHARTS:-1}" != 0 ] && ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib (for the charts)"
    timeout 300 python3 -m pip install --quiet matplotlib >&2 \
        || log "could not install matplotlib: no charts this run"
fi

# 1000 concurrent clients need file descriptors on both sides.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d /tmp/redis-qa-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    # Processes that bench.py starts itself (e.g. a redis-server under valgrind) are listed here.
    if [ -f "$WORK/extra.pids" ]; then
        while read -r pid; do PIDS+=("$pid"); done <"$WORK/extra.pids"
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        sleep 0.2
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TARGET_ROOT="$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")"
# The module under test: the work tree as it is, or with BENCH_REV=<commit> a clean export of that
# commit (built into <target>/bench-rev, so the work tree and its target/release are left alone).
if [ -n "${BENCH_REV:-}" ]; then
    commit="$(git -C "$ROOT" rev-parse --short "$BENCH_REV")"
    src_commit="$(git -C "$ROOT" log -1 --format=%h "$BENCH_REV" -- src Cargo.toml Cargo.lock)"
    export BENCH_MODULE_DESC="$commit (clean export of $BENCH_REV; module sources last changed in $src_commit)"
    log "building $BENCH_MODULE_DESC (release)"
    mkdir -p "$WORK/src"
    git -C "$ROOT" archive "$BENCH_REV" | tar -x -C "$WORK/src"
    (cd "$WORK/src" && CARGO_TARGET_DIR="$TARGET_ROOT/bench-rev" \
        timeout 1800 cargo build --release --quiet --lib --example demo_backend)
    TARGET="$TARGET_ROOT/bench-rev/release"
else
    log "building the module and the demo backend from the work tree (release)"
    timeout 1800 cargo build --release --quiet --lib --example demo_backend
    TARGET="$TARGET_ROOT/release"
fi
MODULE="$TARGET/libredis_qa.so"
# The module API's floor for the hit section (bench/floor: FLOOR.GET), a module of its own.
FLOOR_MODULE=()
case ",$SECTIONS," in
    *,hit,*)
        log "building bench/floor (release)"
        if timeout 1800 cargo build --release --quiet --manifest-path "$ROOT/bench/floor/Cargo.toml" \
            --target-dir "$TARGET_ROOT/floor"; then
            FLOOR_MODULE=(--loadmodule "$TARGET_ROOT/floor/release/libqa_floor.so")
        else
            log "could not build bench/floor: the hit section goes on without its floor"
        fi
        ;;
esac
BACKEND_BIN="$TARGET/examples/demo_backend"
[ -f "$MODULE" ] && [ -x "$BACKEND_BIN" ] || { log "build products missing"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Demo backends: 100 ms (miss overhead, and the entry set-up), 2 s (responsiveness), 1 s (stampede),
# 0 ms (the 10k-question comparison with the client-side way, kept short).
# They stand for a backend on another machine, so they get a higher priority (nice -10) than the
# module's worker threads that may share their core: with a listen backlog of 128, a starved
# accept loop resets connections when 500 misses connect at once.
NICE=(nice -n -10)
"${NICE[@]}" true 2>/dev/null || NICE=()
declare -A BPORT
for delay in 100 2000 1000 0; do
    port="$(free_port)"
    "${NICE[@]}" taskset -c "$CLIENT_CPU" "$BACKEND_BIN" "127.0.0.1:$port" "$delay" >"$WORK/backend-$delay.log" 2>&1 &
    PIDS+=("$!")
    BPORT[$delay]="$port"
done

RPORT="$(free_port)"
log "starting redis-server on 127.0.0.1:$RPORT (core $SERVER_CPU)"
taskset -c "$SERVER_CPU" redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients 4000 \
    --loadmodule "$MODULE" --qa.backend-url "http://127.0.0.1:${BPORT[100]}/v1" \
    "${FLOOR_MODULE[@]}" \
    --daemonize yes --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log"
for _ in $(seq 50); do
    [ -s "$WORK/redis.pid" ] && redis-cli -h 127.0.0.1 -p "$RPORT" PING >/dev/null 2>&1 && break
    sleep 0.1
done
SERVER_PID="$(cat "$WORK/redis.pid")"
redis-cli -h 127.0.0.1 -p "$RPORT" PING >/dev/null || { log "redis-server did not start"; cat "$WORK/redis.log" >&2; exit 1; }
for delay in 100 2000 1000 0; do
    for _ in $(seq 50); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',int(sys.argv[1])),0.2).close()" \
            "${BPORT[$delay]}" 2>/dev/null && break
        sleep 0.1
    done
done

mkdir -p "$(dirname "$OUT")"
if [ -n "$SECTIONS" ]; then
    log "measuring (limit ${TOTAL_LIMIT}s)"
    timeout --kill-after=10 "$TOTAL_LIMIT" taskset -c "$CLIENT_CPU" python3 bench/bench.py \
        --redis-port "$RPORT" --redis-pid "$SERVER_PID" \
        --backend-100 "${BPORT[100]}" --backend-2000 "${BPORT[2000]}" --backend-1000 "${BPORT[1000]}" \
        --backend-0 "${BPORT[0]}" --module "$MODULE" --work "$WORK" --redis-log "$WORK/redis.log" \
        --out "$OUT" --sections "$SECTIONS"
else
    : >"$OUT"
fi
if [ "$RUN_COSTS" = 1 ]; then
    log "costs to the rest of Redis (bench/review_costs.py)"
    { printf '\n## What the module costs the rest of Redis\n\n'
      printf 'Command: `bench/run.sh costs` (or `python3 bench/review_costs.py`), run %s.\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
      timeout --kill-after=10 900 python3 bench/review_costs.py --module "$MODULE" --reps "$REPS"
    } >>"$OUT"
fi

if [ "$RUN_STREAM" = 1 ]; then
    log "streaming (bench/stream_bench.py)"
    { printf '\n## Streaming (QA.STREAM)\n\n'
      printf 'Command: `bench/run.sh stream` (or `python3 bench/stream_bench.py --reps 20`), run %s.\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
      QA_MODULE="$MODULE" timeout --kill-after=10 600 python3 bench/stream_bench.py --reps 20 \
          | sed 's/^## /### /'
    } >>"$OUT"
fi

# The server must still be alive and have logged no panic.
if ! redis-cli -h 127.0.0.1 -p "$RPORT" PING >/dev/null 2>&1; then
    log "redis-server is not answering after the run"
    tail -50 "$WORK/redis.log" >&2
    exit 1
fi
if grep -Eiq 'panicked|crashed|assert' "$WORK/redis.log"; then
    log "redis-server log mentions a panic or crash:"
    grep -Ei 'panicked|crashed|assert' "$WORK/redis.log" | head -20 >&2
fi
log "wrote $OUT"
