#!/usr/bin/env bash
# Runs Runnel's whole test suite: formatting and lints, then every unit and end-to-end
# test against a real Kafka broker that this script starts (and stops) itself.
#
#   scripts/test.sh
#
# It builds into cargo's usual target directory (./target, or CARGO_TARGET_DIR when set),
# the same one `cargo run -p runnel-cli` uses, so the README's two commands share one build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { echo "==> $*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "starting Kafka"
started_kafka=0
if ! scripts/kafka.sh status >/dev/null 2>&1; then
    started_kafka=1
fi
export RUNNEL_KAFKA_BOOTSTRAP
RUNNEL_KAFKA_BOOTSTRAP=$(scripts/kafka.sh start)
if [ "$started_kafka" = 1 ]; then
    trap 'scripts/kafka.sh stop' EXIT
fi

step "building the runnel binary"
cargo build --locked -p runnel-cli

step "cargo test"
log=$(mktemp)
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line over every test binary, so a summary is never "0 passed" of the last doc-test crate.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
