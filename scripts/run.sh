#!/usr/bin/env bash
# make run: redis-server with redis.conf and the module, and the demo backend unless
# QA_BACKEND_URL is set. Ctrl-C stops both (Redis flushes the AOF first: the next make run
# starts with the same entries).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${PORT:-6379}"
# redis.conf keeps the cache in data/ (AOF); the module is loaded by its absolute path,
# because Redis changes into that dir before it loads modules.
mkdir -p data
args=(redis.conf --port "$port" --loadmodule "$PWD/target/release/libredis_qa.so")
demo_pid=""
if [ -n "${QA_BACKEND_URL:-}" ]; then
  echo "backend: $QA_BACKEND_URL"
  args+=(--qa.backend-url "$QA_BACKEND_URL")
else
  target/release/examples/demo_backend 127.0.0.1:8089 "${QA_DEMO_DELAY_MS:-2000}" &
  demo_pid=$!
  trap '[ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true' EXIT
fi
echo "redis-qa on 127.0.0.1:$port -- try: redis-cli -p $port QA.GET faq \"What is our refund policy?\""
redis-server "${args[@]}"
