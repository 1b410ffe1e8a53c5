#!/usr/bin/env bash
# What checkpoints cost and how long a restart takes, release build: the claims job over
# Kafka with 100k live keys (one open window), exactly-once, checkpointing every second;
# then the process is killed (SIGKILL) and started again. Needs the test broker
# (scripts/kafka.sh start).
#
#   benches/checkpoint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
scripts/kafka.sh start >/dev/null
cargo build --release --locked -p runnel-cli >&2
RUNNEL_BINARY="$CARGO_TARGET_DIR/release/runnel" \
    cargo test --locked --test main checkpoint_cost_with_100k_live_keys -- --ignored --nocapture 2>&1 |
    grep -E "^(checkpoints|  checkpoint|restart)"
