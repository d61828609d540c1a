#!/usr/bin/env bash
# The project's test command (README, "Testing"); .ci/run calls it.
# Works on a fresh machine: it installs what the tests need.
#   FUZZ_SECONDS  how long each fuzz target runs (default 30; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "system packages"
missing=()
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
command -v c++ >/dev/null || missing+=(g++)
command -v perl >/dev/null || missing+=(perl)
command -v pkg-config >/dev/null || missing+=(pkg-config)
dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)   # librdkafka TLS/SASL, registry HTTPS
command -v promtool >/dev/null || missing+=(prometheus)          # the monitoring kit's tests
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "all present"
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --all-features --all-targets -q -- -D warnings

step "encoder-only build pulls no runtime weight"
scripts/check-encoder-deps.sh

step "tests (unit, integration, benches in test mode)"
cargo test --all-features --all-targets
step "doc tests"
cargo test --all-features --doc

step "demo (embedded mock cluster, accounting check; plain progress lines when piped)"
demo_log=$(mktemp)
cargo run -q -- demo --records 3000 2>"$demo_log"
if grep -q $'\r' "$demo_log"; then echo "demo wrote carriage returns into a pipe"; exit 1; fi
grep -q "settled: 3000/3000" "$demo_log" || { cat "$demo_log"; echo "demo printed no progress line"; exit 1; }

step "bench --quick (router vs the bare and routing relays; checks correctness, not speed)"
# With dedup windows restored from a prefilled changelog: the count restored is checked too.
cargo run -q -- bench --quick --dedup-resident 50000 2>/dev/null

step "monitoring kit: alert rules (promtool), a real Prometheus scraping the router, dashboard queries"
promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/alerts.test.yaml
cargo test -q --all-features --test prometheus -- --ignored

step "Debian package: build (cargo-deb), install, check, purge"
scripts/deb-test.sh

step "independent broker (tansu, TLS via stunnel, Python clients) and faults"
scripts/independent.sh

fuzz_seconds=${FUZZ_SECONDS:-30}
fuzz() { # target, max input length, extra corpus dirs...
  local target=$1 max_len=$2
  shift 2
  step "fuzz: $target for ${fuzz_seconds}s"
  local log
  log=$(mktemp)
  mkdir -p "fuzz/corpus/$target"
  # libFuzzer exits non-zero on a panic, a timeout or runaway memory.
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "fuzz/corpus/$target" "$@" -- \
      -max_total_time="$fuzz_seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzzing found a failure (see fuzz/artifacts/$target)"
    exit 1
  fi
  grep -E "DONE|^Done" "$log"
}
if [ "$fuzz_seconds" -gt 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q
  # cargo-fuzz needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
  fuzz reader_vs_prost 512       # header reader against prost
  fuzz config_loader 8192 fuzz/seeds/config_loader
fi
echo
echo "all checks passed"
