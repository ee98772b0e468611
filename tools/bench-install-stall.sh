#!/usr/bin/env bash
# The longest loop stall an install causes, on this host (as root): a 60 MiB NPK is
# installed by descriptor and by streaming while a second client sends `list` every
# millisecond (`bench-stall`); each run prints the latencies of those answers. A figure
# of this machine and disk, for before/after comparisons in one session, never a test.
# Usage: tools/bench-install-stall.sh [runs]   (default 3)
#   NANOSTAR_BIN=path: measure that runtime build instead (e.g. an older commit's).
set -Eeuo pipefail
trap 'echo "bench-install-stall.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --quiet --bin npk --bin bench-stall
cargo device x86_64-unknown-linux-musl --quiet
npk=$PWD/target/release/npk
stall=$PWD/target/release/bench-stall
bin=${NANOSTAR_BIN:-$PWD/target/x86_64-unknown-linux-musl/release/nanostar}
# On the disk (not tmpfs), so there is writeback to wait for.
work=$(mktemp -d -p "${BENCH_DIR:-$PWD/target}")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/nanostar.conf" <<CONF
run_dir = "$work/run"
data_dir = "$work/data"
socket = "$work/run/console"
[repository.default]
dir = "$work/repo"
max_install_size = "128M"
[console]
uid.0 = "full"
CONF
unshare --mount --propagation private "$bin" run "$work/nanostar.conf" 2>"$work/runtime.log" &
pid=$!
for _ in $(seq 500); do
    [ -S "$work/run/console" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/runtime.log" >&2; echo "bench-install-stall: the runtime ended" >&2; exit 1; }
    sleep 0.01
done
[ -S "$work/run/console" ] || { cat "$work/runtime.log" >&2; echo "bench-install-stall: no console socket after 5 s" >&2; exit 1; }

# 60 MiB of incompressible data: the NPK is a little over 60 MiB.
mkdir -p "$work/big"
head -c $((60 << 20)) /dev/urandom >"$work/big/blob"
printf 'name = "big"\nversion = "1.0.0"\nuid = 1\ngid = 1\n' >"$work/big.toml"
"$npk" pack --manifest "$work/big.toml" --root "$work/big" --out "$work/big.npk" >/dev/null
echo "runtime $bin, NPK of $(stat -c %s "$work/big.npk") bytes"
nb="$bin --socket $work/run/console"
for how in descriptor --stream; do
    for _ in $(seq "$runs"); do
        # Nothing else's dirty pages in the way.
        sync
        extra=()
        [ "$how" = --stream ] && extra=(--stream)
        printf '%-11s ' "$how"
        "$stall" "$work/run/console" "$bin" "$work/big.npk" "${extra[@]}"
        $nb uninstall big 1.0.0 >/dev/null
    done
done
$nb shutdown >/dev/null
wait "$pid"
pid=
