#!/usr/bin/env bash
# Demo of the package tool: make a key, pack and sign the example, inspect it, verify it,
# show that a flipped byte is caught, and unpack it. Run through `./x demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin npk
npk=$PWD/target/release/npk
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$npk" keygen --out "$work/demo"
step "$npk" pack --manifest examples/hello/manifest.toml --root examples/hello/root \
    --key "$work/demo.key" --arch arm --out "$work"
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
