#!/usr/bin/env bash
# Installs what redis-qa needs on Debian that is missing; does nothing when all is there.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
# usearch (the semantic index's HNSW graph) is C++, built by its crate with the system's g++.
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python client tests (redis-py, pytest).
req="$(dirname "$0")/../tests/python/requirements.txt"
if [ -f "$req" ] && command -v python3 >/dev/null 2>&1; then
  if ! python3 -c 'import redis, pytest' >/dev/null 2>&1; then
    python3 -m pip install -q -r "$req"
  fi
fi

# Node.js client examples and their test (examples/node, node-redis 5): install the locked
# packages. The machine image ships Node 20; without node or npm, Debian's are installed
# (bookworm's nodejs is 18.13, older than node-redis 5's minimum 18.19: tests/node_client.rs
# then fails saying so; QA_SKIP_NODE=1 skips it and this step).
node_dir="$(dirname "$0")/../examples/node"
if [ -f "$node_dir/package-lock.json" ] && [ "${QA_SKIP_NODE:-0}" != "1" ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: nodejs npm"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
  fi
  if [ ! -f "$node_dir/node_modules/redis/package.json" ]; then
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error
  fi
fi
