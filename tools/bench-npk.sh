#!/usr/bin/env bash
# Pack and verify timings for a 16 MiB root, as ratios against floors measured in the same
# run on the same data (this machine is noisy, so absolute times alone mean little):
#   pack floor:   mksquashfs -comp gzip of the same root (the external tool npk replaces)
#   verify floor: sha256sum of the NPK file (reading and hashing every byte once)
# Usage: tools/bench-npk.sh [runs]   (median of `runs`, default 5)
set -Eeuo pipefail
trap 'echo "bench-npk.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --quiet --bin npk
# The init: a static program (npk pack checks that a dynamic one finds its libraries in
# the root, which the host's /bin/true would not).
cargo probe x86_64-unknown-linux-musl --quiet
npk=$PWD/target/release/npk
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 16 MiB root: 8 MiB incompressible, 8 MiB of text, in 64 files over 8 directories.
mkdir -p "$work/root/bin"
cp target/x86_64-unknown-linux-musl/release/probe "$work/root/bin/app"
for d in 0 1 2 3 4 5 6 7; do
    mkdir -p "$work/root/d$d"
    for f in 0 1 2 3; do
        head -c 262144 /dev/urandom >"$work/root/d$d/random$f.bin"
        { yes "line $d $f of some compressible configuration text" || true; } | head -c 262144 >"$work/root/d$d/text$f.txt"
    done
done
cat >"$work/manifest.toml" <<'TOML'
name = "bench"
version = "1.0.0"
init = "/bin/app"
uid = 1000
gid = 1000
[seccomp]
profile = "default"
TOML
"$npk" keygen --out "$work/key" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }

pack_ms=$(for _ in $(seq "$runs"); do
    time_ms "$npk" pack --manifest "$work/manifest.toml" --root "$work/root" --key "$work/key.key" --out "$work/bench.npk"
done | median)
verify_ms=$(for _ in $(seq "$runs"); do time_ms "$npk" verify "$work/bench.npk" --key "$work/key.pub"; done | median)
hash_ms=$(for _ in $(seq "$runs"); do time_ms sha256sum "$work/bench.npk"; done | median)
root_bytes=$(du -sb "$work/root" | cut -f1)
npk_bytes=$(stat -c %s "$work/bench.npk")
echo "root:   $root_bytes bytes"
echo "npk:    $npk_bytes bytes ($((npk_bytes * 100 / root_bytes))% of the root)"
echo "pack:   ${pack_ms} ms (median of $runs)"
if command -v mksquashfs >/dev/null; then
    sq_ms=$(for _ in $(seq "$runs"); do
        rm -f "$work/sq.img"
        time_ms mksquashfs "$work/root" "$work/sq.img" -comp gzip -noappend -no-progress -quiet
    done | median)
    echo "        mksquashfs -comp gzip alone: ${sq_ms} ms; pack / mksquashfs = $(awk "BEGIN {printf \"%.2f\", $pack_ms / ($sq_ms > 0 ? $sq_ms : 1)}")"
fi
echo "verify: ${verify_ms} ms (signature, digests and the whole hash tree recomputed)"
echo "        sha256sum of the file: ${hash_ms} ms; verify / sha256sum = $(awk "BEGIN {printf \"%.2f\", $verify_ms / ($hash_ms > 0 ? $hash_ms : 1)}")"
