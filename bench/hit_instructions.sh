#!/usr/bin/env bash
# Instructions per QA.GET hit of two module builds, counted by callgrind (deterministic, so a
# difference of a few instructions shows through the noise of a shared machine): each build
# on its own redis-server under valgrind, 20000 hits on one 500-byte answer without sources
# (redis-benchmark -c 10 -P 16), the handler's inclusive cost divided by the calls. Valgrind
# has no SHA-NI, so the key's SHA-256 runs in software and dominates the absolute figure;
# compare the two builds, not the figure with `usec_per_call`. (callgrind_annotate may put the
# object name on the next line: the match does not rely on it.)
#
#   bench/hit_instructions.sh OLD.so NEW.so
# Needs valgrind. Traffic to 127.0.0.1 only; stops only the servers it started.
set -euo pipefail
a=$(head -c 500 /dev/zero | tr '\0' x)
for so in "$@"; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    out=$(mktemp /tmp/qa-callgrind.XXXXXX)
    valgrind --tool=callgrind --callgrind-out-file="$out" redis-server --bind 127.0.0.1 \
        --port "$port" --save "" --appendonly no --loadmodule "$so" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 300); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$port" QA.SET bench "What is our refund policy?" "$a" >/dev/null
    redis-benchmark -p "$port" -c 10 -n 20000 -P 16 -q QA.GET bench "What is our refund policy?" >/dev/null
    redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    wait "$pid" 2>/dev/null || true
    per_hit=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
        grep -E 'get\.rs:redis_qa::commands::get::qa_get( |$)' | head -1 |
        awk '{gsub(",","",$1); printf "%.1f", $1/20000}')
    echo "$so: $per_hit instructions per QA.GET hit"
    rm -f "$out"
done
