#!/usr/bin/env bash
# Runs Runnel's whole test suite: formatting and lints, then every unit and end-to-end
# test against the real systems this script starts once (and stops) itself: a Kafka
# broker, a PostgreSQL server and a Kafka Connect worker with Debezium's PostgreSQL
# connector (the CDC tests); Debian's headless Chromium drives the dashboard. A service
# already running is used and left running.
#
#   scripts/test.sh
#
# It builds into cargo's usual target directory (./target, or CARGO_TARGET_DIR when set),
# the same one `cargo run -p runnel-cli` uses, so the README's two commands share one build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { echo "==> $*" >&2; }

# librdkafka is built with OpenSSL (TLS and SASL/SCRAM to secured brokers): its headers
# come from Debian's libssl-dev.
if ! pkg-config --exists openssl 2>/dev/null; then
    step "installing libssl-dev and pkg-config (librdkafka's TLS)"
    apt-get install -y -q libssl-dev pkg-config >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Stops, on exit, the services this script started (in reverse order).
stop_on_exit=()
cleanup() {
    local i
    for ((i = ${#stop_on_exit[@]} - 1; i >= 0; i--)); do
        ${stop_on_exit[$i]} || true
    done
}
trap cleanup EXIT

# start VARIABLE SCRIPT [ARGS]: starts a service unless it runs, and exports what its
# `start` printed (its address) as VARIABLE. Not called in a `$(...)`: the stop it
# registers must reach this shell's `stop_on_exit`, not a subshell's copy.
start() {
    local variable="$1" script="$2" address
    shift 2
    if ! "$script" status >/dev/null 2>&1; then
        stop_on_exit+=("$script stop")
    fi
    address=$("$script" start "$@")
    printf -v "$variable" '%s' "$address"
    export "${variable?}"
}

step "starting Kafka"
start RUNNEL_KAFKA_BOOTSTRAP scripts/kafka.sh

step "starting PostgreSQL"
start RUNNEL_POSTGRES_URL scripts/postgres.sh

step "starting Kafka Connect with Debezium"
KAFKA_BOOTSTRAP="$RUNNEL_KAFKA_BOOTSTRAP" start RUNNEL_CONNECT_URL scripts/connect.sh

step "installing Chromium for the dashboard's browser test"
export RUNNEL_CHROMEDRIVER
RUNNEL_CHROMEDRIVER=$(scripts/chromium.sh install)

step "building the runnel binary"
cargo build --locked -p runnel-cli

step "cargo test"
log=$(mktemp)
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line over every test binary, so a summary is never "0 passed" of the last doc-test crate.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
