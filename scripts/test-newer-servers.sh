#!/usr/bin/env bash
# Runs the integration suite against Redis 8.0 and Valkey 8.1 (Debian 13's packages, unpacked
# into target/servers without touching the system; see scripts/newer-servers.sh). The suite
# itself already ran against the system's redis-server (Redis 7.0 on Debian 12).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${QA_NEWER_SERVERS:-1}" = "0" ]; then
  echo "newer servers: skipped (QA_NEWER_SERVERS=0)"
  exit 0
fi
scripts/newer-servers.sh target/servers >/dev/null
for server in redis-server-8 valkey-server-8; do
  bin="$PWD/target/servers/bin/$server"
  echo "== integration tests on $("$bin" --version | cut -d' ' -f1-3)"
  QA_TEST_SERVER="$bin" ${CARGO:-cargo} test --release --test '*'
done
