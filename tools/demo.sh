#!/usr/bin/env bash
# Demo of the package tool: make a key, pack and sign the example, inspect it, verify it,
# show that a flipped byte is caught, and unpack it (no board; the board demo is
# `./x demo`). The example is packed by examples/pack.sh, which adds Debian's static
# busybox for ARM (its /bin/sh; the first run, as root, downloads it).
set -Eeuo pipefail
trap 'echo "tools/demo.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin npk
npk=$PWD/target/release/npk
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$npk" keygen --out "$work/demo"
step env NPK="$npk" examples/pack.sh --arch arm --key "$work/demo.key" --out "$work" hello
step "$npk" inspect "$work/hello-0.1.0.npk"
step "$npk" verify "$work/hello-0.1.0.npk" --key "$work/demo.pub"

echo
echo "# Flip one byte inside the image and verify again:"
cp "$work/hello-0.1.0.npk" "$work/tampered.npk"
offset=$("$npk" inspect "$work/tampered.npk" --json | sed -n 's/^  "image_offset": \([0-9]*\),$/\1/p')
printf '\xff' | dd of="$work/tampered.npk" bs=1 seek=$((offset + 100)) conv=notrunc status=none
set +e
"$npk" verify "$work/tampered.npk" --key "$work/demo.pub"
echo "(exit code $?: 7 means the image is broken)"
set -e

step "$npk" unpack "$work/hello-0.1.0.npk" --out "$work/unpacked"
step find "$work/unpacked" -printf '%M %p\n'
