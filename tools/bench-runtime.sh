#!/usr/bin/env bash
# Runtime figures on this host (as root), as ratios against floors measured in the same
# run: idle RSS with 0 and 100 installed packages, and the install of a 16 MiB NPK through
# the socket against `cp` + `sync` of the same file.
# Usage: tools/bench-runtime.sh [runs]   (median of `runs`, default 5)
set -Eeuo pipefail
trap 'echo "bench-runtime.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --quiet --bin npk
cargo device x86_64-unknown-linux-musl --quiet
npk=$PWD/target/release/npk
bin=$PWD/target/x86_64-unknown-linux-musl/release/nanostar
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/nanostar.conf" <<CONF
run_dir = "$work/run"
data_dir = "$work/data"
socket = "$work/run/console"
[repository.default]
dir = "$work/repo"
max_install_size = "64M"
[console]
uid.0 = "full"
CONF
start() {
    unshare --mount --propagation private "$bin" run "$work/nanostar.conf" 2>"$work/runtime.log" &
    pid=$!
    # Until the console's socket is there (bounded; no request, so the idle figure is of
    # a runtime that has served nobody yet; one that died says why in its log).
    for _ in $(seq 500); do
        [ -S "$work/run/console" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/runtime.log" >&2; echo "bench-runtime: the runtime ended" >&2; exit 1; }
        sleep 0.01
    done
    [ -S "$work/run/console" ] || { cat "$work/runtime.log" >&2; echo "bench-runtime: no console socket after 5 s" >&2; exit 1; }
    # unshare execs the runtime, so $pid is the runtime itself.
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
nb="$bin --socket $work/run/console"

start
echo "idle RSS, 0 packages:   $(rss_kib) KiB (budget 256 KiB)"
mkdir -p "$work/root"
echo data >"$work/root/file"
for i in $(seq 1 100); do
    printf 'name = "p%d"\nversion = "1.0.0"\nuid = 1\ngid = 1\n' "$i" >"$work/m.toml"
    "$npk" pack --manifest "$work/m.toml" --root "$work/root" --out "$work/p.npk" >/dev/null
    $nb install "$work/p.npk" >/dev/null 2>&1
done
echo "idle RSS, 100 packages: $(rss_kib) KiB"

# 16 MiB of incompressible data: the NPK is a little over 16 MiB.
mkdir -p "$work/big"
head -c $((16 << 20)) /dev/urandom >"$work/big/blob"
printf 'name = "big"\nversion = "1.0.0"\nuid = 1\ngid = 1\n' >"$work/big.toml"
"$npk" pack --manifest "$work/big.toml" --root "$work/big" --out "$work/big.npk" >/dev/null
size=$(stat -c %s "$work/big.npk")
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
install_ms() {
    for _ in $(seq "$runs"); do
        ms $nb install "$work/big.npk" "$@"
        $nb uninstall big 1.0.0 >/dev/null
    done | median
}
fd_ms=$(install_ms)
stream_ms=$(install_ms --stream)
copy_ms=$(for _ in $(seq "$runs"); do
    ms sh -c "cp '$work/big.npk' '$work/repo/copy.npk' && sync"
    rm -f "$work/repo/copy.npk"
done | median)
ratio() { awk "BEGIN {printf \"%.2f\", $1 / ($2 > 0 ? $2 : 1)}"; }
echo "install of a $size-byte NPK (median of $runs), against cp + sync of the same file: ${copy_ms} ms"
echo "  descriptor passed: ${fd_ms} ms, ratio $(ratio "$fd_ms" "$copy_ms") (budget 1.5)"
echo "  bytes streamed (--stream): ${stream_ms} ms, ratio $(ratio "$stream_ms" "$copy_ms")"
$nb shutdown >/dev/null
wait "$pid"
pid=
