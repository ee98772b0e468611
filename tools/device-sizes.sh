#!/usr/bin/env bash
# Builds the stripped static `nanostar` for every device target and reports its size
# against the budget (docs/design.md: <= 128 KiB on ARMv7, all features).
set -Eeuo pipefail
trap 'echo "device-sizes.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."
budget=$((128 * 1024))
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
    rustup target list --installed | grep -qx "$target" || rustup target add "$target" >/dev/null
    cargo device "$target" --quiet
    size=$(stat -c %s "target/$target/release/nanostar")
    printf '%-32s %7d bytes  (%d%% of the 128 KiB budget)\n' "$target" "$size" $((size * 100 / budget))
done
