#!/usr/bin/env bash
# Container figures on this host (as root): start latency (request -> app running, and
# request -> app exited) against a bare fork+exec(+wait) of the same static program in the
# same run, back to back and after an idle pause; and the private memory of a running
# container's init.
# Usage: tools/bench-containers.sh [runs] [pause_ms]   (medians of `runs`, default 100)
set -Eeuo pipefail
trap 'echo "bench-containers.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."
runs=${1:-100}
pause_ms=${2:-200}
cargo build --release --quiet --bin npk --bin bench-start
cargo device x86_64-unknown-linux-musl --quiet
cargo probe x86_64-unknown-linux-musl --quiet
npk=$PWD/target/release/npk
bin=$PWD/target/x86_64-unknown-linux-musl/release/nanostar
probe=$PWD/target/x86_64-unknown-linux-musl/release/probe
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
[console]
uid.0 = "full"
CONF
# The runtime's own mount and PID namespaces, as in the integration tests.
unshare --mount --propagation private --pid --fork --kill-child \
    "$bin" run "$work/nanostar.conf" 2>"$work/runtime.log" &
pid=$!
# Until the console serves (bounded; a runtime that died says why in its log).
for _ in $(seq 500); do
    "$bin" --socket "$work/run/console" list >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/runtime.log" >&2; echo "bench-containers: the runtime ended" >&2; exit 1; }
    sleep 0.01
done
"$bin" --socket "$work/run/console" list >/dev/null || { cat "$work/runtime.log" >&2; exit 1; }
nb="$bin --socket $work/run/console"

# The probe in a package with the host's network (the budget's case) and no mounts.
mkdir -p "$work/root/bin"
cp "$probe" "$work/root/bin/probe"
printf 'name = "bench"\nversion = "1.0.0"\ninit = "/bin/probe"\nuid = 1000\ngid = 1000\nnetwork = "host"\n' >"$work/m.toml"
"$npk" pack --manifest "$work/m.toml" --root "$work/root" --out "$work/bench.npk" >/dev/null
$nb install "$work/bench.npk" >/dev/null
$nb mount bench 1.0.0 >/dev/null
runtime=$(tr -d " " <"/proc/$pid/task/$pid/children")
target/release/bench-start "$work/run/console" bench "$probe" "$runs" "$pause_ms" "$runtime"
$nb shutdown >/dev/null
wait "$pid" || true
pid=
