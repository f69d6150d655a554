#!/usr/bin/env bash
# Installs what redis-qa needs on Debian that is missing; does nothing when all is there.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
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
