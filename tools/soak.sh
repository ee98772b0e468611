#!/usr/bin/env bash
# The soak against a live runtime (nanostar-soak, tools/src/soak.rs): builds what it needs
# and runs it on this host or on a QEMU board.
#
#   tools/soak.sh [--board BOARD] [nanostar-soak options...]
#
#   tools/soak.sh --duration 10m                      # this host, as root
#   tools/soak.sh --board qemu-aarch64 --duration 10m # the 64-bit board (or qemu-armv7)
#
# Other options go to nanostar-soak (--clients N, --seed S, --verbose, --capture DIR).
# Builds run with nice -n 10; the exit code is nanostar-soak's (0 passed, 1 failed).
set -Eeuo pipefail
trap 'echo "soak.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."

board=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --board) board=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
case "$board" in
    "") target=x86_64-unknown-linux-musl ;;
    qemu-aarch64) target=aarch64-unknown-linux-musl ;;
    qemu-armv7) target=armv7-unknown-linux-gnueabihf ;;
    *) echo "soak.sh: unknown board $board (qemu-armv7, qemu-aarch64)" >&2; exit 2 ;;
esac
dir=target/device-tests
for spec in nanostar:nanostar nanostar-probe:probe; do
    CARGO_TARGET_DIR=$dir nice -n 10 cargo build --release -q -p "${spec%%:*}" --bin "${spec##*:}" --target "$target"
done
nice -n 10 cargo build --release -q -p nanostar-tools --bin nanostar-soak
bin=$dir/$target/release
where=(--runtime "$bin/nanostar")
[ -n "$board" ] && where+=(--board "$board")
exec target/release/nanostar-soak "${where[@]}" --probe "$bin/probe" "${args[@]}"
