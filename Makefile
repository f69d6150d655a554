# redis-qa: the README's commands. `make run` to try it, `make test` to test it.

CARGO ?= cargo
PORT ?= 6379

.PHONY: all deps build run demo test lint bench bench-semantic bench-ann clean fuzz eval-semantic eval-semantic-offline

all: build

# Installs what is missing on Debian: redis-server, redis-tools, libclang-dev (for bindgen),
# and the Python packages the client tests use.
deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release --lib --example demo_backend

# Starts redis-server with redis.conf and the module, plus the bundled demo backend
# (2 s per answer) unless QA_BACKEND_URL points at a real one. The cache persists in data/
# (AOF): stop with Ctrl-C, make run again, and the answers are still there.
run: build
	@PORT=$(PORT) scripts/run.sh

# A scripted session on a redis-server of its own with the demo backend (2 s per answer): per
# question a hit or a miss and its latency, then QA.STATS. Stops only what it started.
demo: build
	@CARGO=$(CARGO) scripts/demo.sh

# Unit tests, then the integration tests against real redis-server processes: Debian's
# Redis 7.0, then Redis 8.0 and Valkey 8.1 (QA_NEWER_SERVERS=0 skips those two).
test: deps
	$(CARGO) build --release --lib
	$(CARGO) test --release
	@CARGO=$(CARGO) scripts/test-newer-servers.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Every benchmark section into docs/benchmarks.md and docs/bench-*.png (under 10 minutes on 2
# cores); `bench/run.sh memory scale` runs some sections only, into bench/out/.
bench: build
	bench/run.sh

# Each fuzz target for FUZZ_SECS (60) seconds (cargo-fuzz on nightly, else the same checks as
# stable property tests), then a QA_SOAK_SECS (120) second soak. See docs/security.md.
fuzz: deps
	@scripts/fuzz.sh

# The semantic tier through a live server: MiniLM embeddings (bench/setup_embeddings.sh
# installs them into bench/.venv, once), the test side of the labelled pairs in tests/data/, precision and
# recall per threshold with and without the guards; writes docs/semantic.md. See there.
eval-semantic: deps
	$(CARGO) build --release --lib
	@bench/setup_embeddings.sh >/dev/null
	bench/.venv/bin/python bench/eval_semantic.py

# The semantic index: search time, memory and rebuild for 100k entries (docs/semantic.md).
# The semantic index with its HNSW graph through a live server (issue #16): fill, memory,
# search, inserts while searching, restart, small scopes (docs/semantic.md), its table in
# bench/out/graph-<entries>.md and a chart of every such table there in
# bench/out/semantic-graph.png. Needs numpy, redis-py and matplotlib in bench/.venv (made
# here if missing). SEMANTIC_ENTRIES=300000 for a larger scope.
SEMANTIC_ENTRIES ?= 100000
bench-semantic: build
	@bench/.venv/bin/python -c 'import numpy, redis, matplotlib' 2>/dev/null || \
		{ python3 -m venv bench/.venv && bench/.venv/bin/pip install --quiet numpy redis matplotlib; }
	@mkdir -p bench/out
	bench/.venv/bin/python bench/ann/graph_bench.py --entries $(SEMANTIC_ENTRIES) | tee bench/out/graph-$(SEMANTIC_ENTRIES).md
	bench/.venv/bin/python bench/ann/graph_chart.py bench/out/graph-*.md --png bench/out/semantic-graph.png

# HNSW libraries (usearch f32/f16/int8, hnsw_rs) against exact search on 100k random unit
# vectors: recall, search and insert cost, memory (bench/ann, a cargo project of its own; the
# module does not use them yet: docs/semantic.md). Needs g++ (usearch is C++).
bench-ann:
	cd bench/ann && $(CARGO) run --release -- --n 100000 --data random --libs usearch-f16,usearch-i8,hnsw_rs

# The same pairs without Redis: cosine from the embedding model, verdicts from the guards, on
# the tune side (where rules and threshold are chosen), for both models. The test side:
# bench/.venv/bin/python bench/eval_offline.py --split test --at 0.96 (docs/semantic.md).
eval-semantic-offline:
	@bench/setup_embeddings.sh >/dev/null
	bench/.venv/bin/python bench/eval_offline.py --split tune --model minilm --ablate
	bench/.venv/bin/python bench/eval_offline.py --split tune --model static

clean:
	$(CARGO) clean
