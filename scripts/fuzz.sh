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
    log="fuzz/artifacts/$t.log"
    mkdir -p fuzz/artifacts
    status=0
    (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" \
      -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|.*Test unit written)' "$log" || true
    if [ "$status" != 0 ]; then
      grep -A3 'panicked' "$log" >&2 || true
      echo "fuzz $t: failed (status $status); the input is in fuzz/artifacts/$t/, the log in $log" >&2
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
