#!/usr/bin/env bash
# `make fuzz`: each fuzz target for FUZZ_SECS seconds (default 60), then the long soak
# (QA_SOAK_SECS, default 120; FUZZ_SOAK=0 skips it).
#
# With a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`), the targets run under
# libFuzzer (`cargo +nightly fuzz run`); a crash stops the run and leaves its input in
# fuzz/artifacts/<target>/ (turn it into a test in fuzz/tests/regressions.rs). Without them,
# the same checks run on stable as property tests over generated inputs (fuzz/tests/props.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-60}"
targets=(normalize_key parse_openai parse_anthropic parse_webhook args excerpt)

if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo fuzz --version >/dev/null 2>&1; then
  (cd fuzz && cargo +nightly fuzz build -O)
  for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "== fuzz $t for ${secs} s"
    (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -print_final_stats=1 2>&1) | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|artifact_prefix|Test unit written)' || true
    # grep only filters the noise: a crash fails the pipeline's fuzz run, so check it here.
    if ls "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/oom-* "fuzz/artifacts/$t"/timeout-* >/dev/null 2>&1; then
      echo "fuzz $t: found a failing input in fuzz/artifacts/$t/" >&2
      exit 1
    fi
  done
else
  echo "no nightly toolchain or cargo-fuzz: running the fuzz checks as property tests (stable)"
  cases=$((secs * 20000))
  (cd fuzz && QA_PROPS_CASES="$cases" cargo test --release --test props -- --nocapture)
fi

if [ "${FUZZ_SOAK:-1}" != "0" ]; then
  echo "== long soak (${QA_SOAK_SECS:-120} s)"
  cargo build --release --lib
  cargo test --release --test soak -- --ignored soak_long --nocapture
fi
