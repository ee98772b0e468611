#!/usr/bin/env bash
# The board demo, run by `./x demo`: a QEMU ARM board boots with the nanostar runtime as
# PID 1, and the host drives it over the board's virtio console with the `nanostar` client.
#
#   board/demo.sh [--board qemu-armv7|qemu-aarch64] [--keep]
#
#   --board   the board (default qemu-armv7, a 32-bit Cortex-A15 with 128 MB)
#   --keep    after the tour, leave the board running for you to play with: the exact
#             client command line is printed; `... shutdown` (or Ctrl-C here) stops it
#
# What it does, building or fetching what it needs first (all cached; as root on a fresh
# Debian 12 machine, `./x demo` installs the Debian packages and Rust targets):
#   - the board's kernel (board/build-kernel.sh via nanostar-board), the runtime for the
#     board, the x86_64 client, npk, Debian's busybox-static for the board
#     (board/fetch-busybox.sh), a demo signing key (~/.cache/nanostar/demo/demo.key);
#   - packs and signs the example packages (examples/pack.sh) and shows one with
#     `npk inspect` and `npk verify`;
#   - boot 1, a fresh ext4 data disk: installs the packages over the console (streamed),
#     shows that an unsigned package is refused, starts each one and shows its logs,
#     lists, stops the service and shows its exit status, shuts the board down;
#   - boot 2, the same disk: the packages are still there (verified again at boot), the
#     `autostart` ones run without being asked, hello's persistent counter went up;
#   - prints the timings: boot to "runtime serving", boot to the autostart containers
#     running, the whole demo.
# The board's serial console is shown throughout, each line marked `board │` with the
# host's time since QEMU started.
set -Eeuo pipefail
trap 'echo "demo.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR
cd "$(dirname "$0")/.."
repo=$PWD
demo_start=$(date +%s.%N)

usage() { sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//'; }
board=qemu-armv7
keep=
while [ $# -gt 0 ]; do
    case "$1" in
    --board) board=${2:?--board needs a board name}; shift 2 ;;
    --board=*) board=${1#--board=}; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
case "$board" in
qemu-armv7) target=armv7-unknown-linux-gnueabihf arch=arm ;;
qemu-aarch64) target=aarch64-unknown-linux-musl arch=aarch64 ;;
*) echo "demo: unknown board $board (qemu-armv7 or qemu-aarch64)" >&2; exit 2 ;;
esac

# ---- presentation ----
if [ -t 1 ]; then
    bold=$'\e[1m' dim=$'\e[2m' cyan=$'\e[36m' green=$'\e[32m' red=$'\e[31m' reset=$'\e[0m'
else
    bold='' dim='' cyan='' green='' red='' reset=''
fi
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$reset"; }
note() { printf '%s  %s%s\n' "$dim" "$*" "$reset"; }
die() {
    printf '%sdemo: %s%s\n' "$red" "$*" "$reset" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# ---- build and fetch (all cached) ----
cache=${NANOSTAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nanostar}
say "Building: npk and nanostar-board (host), the runtime for $board ($target), the x86_64 client"
cargo build --release --quiet -p nanostar-tools --bin npk --bin nanostar-board
cargo build --release --quiet -p nanostar --bin nanostar --target "$target"
cargo build --release --quiet -p nanostar --bin nanostar --target x86_64-unknown-linux-musl
npk=$repo/target/release/npk
runner=$repo/target/release/nanostar-board
runtime=$repo/target/$target/release/nanostar
client=$repo/target/x86_64-unknown-linux-musl/release/nanostar
note "runtime: $runtime ($(stat -c %s "$runtime") bytes, static, no libc)"

say "The $board kernel (board/build-kernel.sh; the first build takes a few minutes)"
kernel=$("$runner" kernel "$board" | tail -n1) || die "the $board kernel build failed (see above)"
note "$kernel"

say "Debian's busybox-static for $arch (board/fetch-busybox.sh), the demo's signing key"
busybox=$(board/fetch-busybox.sh "$arch" | tail -n1) || die "board/fetch-busybox.sh $arch failed (see above)"
note "$busybox"
mkdir -p "$cache/demo"
if [ ! -f "$cache/demo/demo.key" ]; then
    "$npk" keygen --out "$cache/demo/demo" >/dev/null || die "npk keygen --out $cache/demo/demo failed"
fi
key=$cache/demo/demo.key
pub=$cache/demo/demo.pub
note "$key (the board's repository \"default\" trusts $pub)"

work=$(mktemp -d /tmp/nanostar-demo.XXXXXX)
board_pid=
view_pid=
cleanup() {
    if [ -n "$board_pid" ] && kill -0 "$board_pid" 2>/dev/null; then
        # Stop QEMU (the runner's child): the runner then ends and removes its work folder.
        # If it does not, stop the whole process group (setsid below).
        pkill -TERM -P "$board_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$board_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -TERM -- "-$board_pid" 2>/dev/null || true
        wait "$board_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "Packing and signing the examples (examples/pack.sh: each root plus busybox, squashfs + dm-verity tree + Ed25519)"
NPK=$npk examples/pack.sh --arch "$arch" --key "$key" --busybox "$busybox" --out "$work/packages" \
    2> >(sed "s/^/  /") >"$work/packages.txt"
sleep 0.1
NPK=$npk examples/pack.sh --arch "$arch" --busybox "$busybox" --out "$work/unsigned" hello >/dev/null 2>"$work/unsigned.err" ||
    { cat "$work/unsigned.err" >&2; die "packing the unsigned hello failed"; }
pkg() { grep "/$1-[0-9]" "$work/packages.txt"; }

say "One package up close: npk inspect (header) and npk verify (signature, manifest, seccomp, image, hash tree)"
printf '%s$ npk inspect hello-0.1.0.npk%s\n' "$bold" "$reset"
"$npk" inspect "$(pkg hello)" | sed -n '1,9p'
printf '%s$ npk verify hello-0.1.0.npk --key demo.pub%s\n' "$bold" "$reset"
"$npk" verify "$(pkg hello)" --key "$pub" | sed "s|$work/packages/||"

# ---- the board ----
sock=$work/hvc.sock
disk=$work/disk.img
"$runner" disk --out "$disk" --size 64 2>"$work/disk.err" || { cat "$work/disk.err" >&2; die "cannot make the data disk"; }
log=

# The serial console: into $log, and to the terminal marked as the board's.
serial_view() {
    while IFS= read -r line; do
        printf '%s\n' "$line" >>"$log"
        printf '%s%s  board │ %s%s\n' "$dim" "$cyan" "$line" "$reset"
    done
}

# boot NAME [TIMEOUT]: starts the board in the background and waits until the runtime
# serves its console.
boot() {
    log=$work/$1.log
    : >"$log"
    rm -f "$sock"
    exec {view_fd}> >(serial_view)
    view_pid=$!
    # setsid: the runner and QEMU get their own process group, so cleanup can stop both.
    setsid "$runner" boot "$board" --kernel "$kernel" --init "$runtime" \
        --file "board/$board/nanostar.conf:/etc/nanostar.conf" \
        --file "$pub:/etc/nanostar/demo.pub" \
        --disk "$disk" --hvc "socket:$sock" --append "loglevel=5" \
        --poweroff-ok --timestamps --timeout "${2:-300}" >&"$view_fd" 2>"$work/$1.runner" &
    board_pid=$!
    exec {view_fd}>&-
    local deadline=$(($(date +%s) + 120))
    until grep -q 'nanostar: serving .* packages on' "$log"; do
        if ! kill -0 "$board_pid" 2>/dev/null; then
            cat "$work/$1.runner" >&2
            die "the board stopped before the runtime served its console"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || die "the runtime did not come up within 120 s"
        sleep 0.05
    done
    seen_at=$(now)
    serving_at=$(sed -n 's/^+\([0-9.]*\)s nanostar: serving .* packages on.*/\1/p' "$log" | head -n1)
    # Host clock minus QEMU-start clock (the runner's timestamps), within a poll interval.
    offset=$(awk -v a="$seen_at" -v b="$serving_at" 'BEGIN { printf "%.3f", a - b }')
}

# Waits for the board to power off; the runner's verdict (with --poweroff-ok) is its exit code.
power_off_wait() {
    local code=0
    wait "$board_pid" || code=$?
    board_pid=
    wait "$view_pid" 2>/dev/null || true
    if [ "$code" -eq 0 ]; then
        note "QEMU exited after a clean power-off ($(grep -o 'pass ([0-9.]* s)' "$work/$1.runner" || true))"
    else
        cat "$work/$1.runner" >&2
        die "the board did not power off cleanly (nanostar-board exit code $code)"
    fi
}

# ns ARGS: the client, shown as `$ nanostar ARGS` with how long the command took.
ns() {
    local t status=0 shown="$*"
    printf '%s$ nanostar %s%s\n' "$bold" "${shown//$work\//}" "$reset"
    t=$(now)
    "$client" --socket "$sock" "$@" 2>"$work/stderr" || status=$?
    # Install's progress lines are for people at a terminal; refusals stay.
    grep -v -E '^installing .*: [0-9]+%$' "$work/stderr" >&2 || true
    note "($(since "$t") s$([ "$status" -eq 0 ] || echo ", exit code $status"))"
    return 0
}

say "Boot 1: $board with a fresh ext4 data disk; nanostar is PID 1"
note "host side: nanostar = $client --socket $sock"
note "(the board's virtio console /dev/hvc0, wired by QEMU to that unix socket)"
boot boot1 "$([ -n "$keep" ] && echo 86400 || echo 300)"
note "runtime serving ${serving_at} s after QEMU started"

say "Install the signed packages, streamed over the console: each is verified on arrival (signature, then mounted through loop + dm-verity when used)"
ns list
for name in motd hello greeter toolbox ticker sysinfo; do
    ns install "$(pkg "$name")" --stream
done

say "The repository \"default\" only takes packages signed by a trusted key; an unsigned one is refused"
ns install "$work/unsigned/hello-0.1.0.npk" --stream
ns list

say "hello: a busybox sh script; stdout goes to the log and the kernel log (so the serial console shows it too); /data persists"
ns start hello
sleep 0.5
ns logs hello

say "greeter: mounts the resource package motd read-only at /motd and prints it"
ns start greeter
sleep 0.5
ns logs greeter

say "toolbox: Debian's busybox-static, unmodified, in a container: what it sees and what it may not do"
ns start toolbox
sleep 2
ns logs toolbox

say "ticker: a service printing a line a second (restart on failure, 4M memory, half a CPU)"
ns start ticker
sleep 3.2
ns logs ticker
say "Kill it (SIGKILL counts as a failure): the restart policy brings it back after 500 ms"
ns kill ticker SIGKILL
sleep 1.5
ns list

say "sysinfo: the runtime's own memory, read from the board's /proc (a read-only bind mount its manifest names)"
ns start sysinfo
sleep 1
ns logs sysinfo

if [ -n "$keep" ]; then
    say "The board keeps running. From another terminal:"
    printf '\n    %s --socket %s list\n' "$client" "$sock"
    printf '    %s --socket %s start toolbox -- ps\n' "$client" "$sock"
    printf '    %s --socket %s logs ticker --follow\n' "$client" "$sock"
    printf '\n  Stop it with `%s --socket %s shutdown`, or Ctrl-C here.\n' "$client" "$sock"
    printf '  One client at a time on that socket. The signed packages are in %s/packages/;\n' "$work"
    printf '  the repository "dev" takes unsigned ones: install FILE --stream --repo dev\n'
    power_off_wait boot1
    exit 0
fi

say "Stop the service: SIGTERM, its trap says goodbye, and stop reports its exit status"
ns stop ticker
ns logs ticker
ns list

say "Shut down: containers stopped, data disk unmounted, power off"
ns shutdown
power_off_wait boot1
serving1=$serving_at

say "Boot 2, the same disk: packages verified at boot, autostart ones (hello, ticker) start by themselves"
boot boot2
serving2=$serving_at
# When did the autostart containers come up? Poll until ticker runs: its start is now
# minus its uptime, on QEMU's clock. Then until hello (one-shot) has ended.
deadline=$(($(date +%s) + 30))
ticker_at=
until [ -n "$ticker_at" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || die "ticker did not autostart"
    row=$("$client" --socket "$sock" --json list 2>/dev/null | grep '"name":"ticker"' || true)
    if grep -q '"state":"running"' <<<"$row"; then
        uptime_ms=$(sed -n 's/.*"uptime_ms":\([0-9]*\).*/\1/p' <<<"$row")
        ticker_at=$(awk -v t="$(now)" -v o="$offset" -v u="$uptime_ms" 'BEGIN { printf "%.2f", t - o - u / 1000 }')
    else
        sleep 0.05
    fi
done
until "$client" --socket "$sock" --json list 2>/dev/null | grep '"name":"hello"' | grep -q '"last_exit":{'; do
    [ "$(date +%s)" -lt "$deadline" ] || die "hello did not autostart"
    sleep 0.1
done
ns list
ns logs hello
sleep 1
ns logs ticker | tee "$work/ticker2.txt"
ns shutdown
power_off_wait boot2

# ---- figures ----
hello_kmsg=$(grep -m1 'hello: Hello from' "$work/boot2.log" || true)
hello_host=$(sed -n 's/^+\([0-9.]*\)s .*/\1/p' <<<"$hello_kmsg")
hello_guest=$(sed -n 's/.*\[ *\([0-9.]*\)\] hello: .*/\1/p' <<<"$hello_kmsg")
tick_guest=$(grep -m1 -o 'tick 1, board up [0-9.]*' "$work/ticker2.txt" | awk '{print $NF}' || true)
say "Timings on $board (QEMU TCG on this host)"
printf '  boot 1 (empty disk):     runtime serving %s s after QEMU started\n' "$serving1"
printf '  boot 2 (6 packages):     runtime serving %s s after QEMU started\n' "$serving2"
if [ -n "$hello_host" ]; then
    printf '                           hello (autostart) printed at %s s (board uptime %s s)\n' \
        "$hello_host" "$hello_guest"
fi
printf '                           ticker (autostart) running at %s s (first tick at board uptime %s s)\n' \
    "$ticker_at" "${tick_guest:-?}"
printf '  the whole demo:          %s s\n' "$(since "$demo_start")"
printf '\n%sDone.%s The old package-tool demo is tools/demo.sh; `./x demo --keep` leaves the board running.\n' \
    "$green" "$reset"
