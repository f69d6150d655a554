#!/usr/bin/env bash
# make run: redis-server with redis.conf and the module, and the demo backend unless
# QA_BACKEND_URL is set. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${PORT:-6379}"
# No --dir: Redis changes into it before loading modules, and redis.conf's loadmodule path
# is relative to the repository root. Nothing is written there (save "", appendonly no).
args=(redis.conf --port "$port")
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
