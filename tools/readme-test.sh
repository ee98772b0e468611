#!/usr/bin/env bash
# README.md is executable truth: this runs its ```sh blocks, in order, in one bash session
# (`set -Eeuo pipefail`: variables carry from one block to the next, and any failing line
# fails the test with its line number in README.md and the command), as root on this host,
# from the repository's top folder. `./x test` runs it after `cargo test` (not inside it:
# the blocks run cargo themselves, which would wait for the lock `cargo test` holds).
#
#   tools/readme-test.sh [README]      (default: README.md next to tools/)
#
# A block is skipped when the line right before its opening fence is an HTML comment
#   <!-- readme-test: skip (why) -->
# (README.md skips `./x demo` and `./x test` themselves, and `./x demo --keep`).
#
# Every `/tmp/` in the blocks is rewritten to a private temporary folder, so the run
# neither meets a reader's leftovers in /tmp nor leaves any behind. Whatever happens,
# everything the blocks started in the background is stopped (the blocks run in their
# own session: its whole process group is killed), the temporary folder is removed, and
# any *.npk the blocks wrote into the repository is removed (and the test fails: README
# should write packages under /tmp). Exit codes only: expected output shown in README
# comments is not compared.
set -Eeuo pipefail
trap 'echo "readme-test.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readme=$(realpath "${1:-$repo/README.md}")
name=$(basename "$readme")
cd "$repo"

die() {
    echo "readme: error: $*" >&2
    exit 1
}
[ -f "$readme" ] || die "no $readme"
[ "$(id -u)" -eq 0 ] || die "run as root: $name's commands mount, unshare and use apt-get"

if [ -t 1 ]; then
    bold=$'\e[1m' dim=$'\e[2m' red=$'\e[31m' green=$'\e[32m' reset=$'\e[0m'
else
    bold='' dim='' red='' green='' reset=''
fi

work=$(mktemp -d /tmp/readme-test.XXXXXX)
mkdir "$work/tmp"
touch "$work/started"
session=
# Packages the blocks wrote into the repository (outside target/): removed, and the
# test fails; README should write them under /tmp.
stray=
remove_stray() {
    local found
    found=$(find "$repo" -path "$repo/target" -prune -o -path "$repo/.git" -prune -o \
        -name '*.npk' -newer "$work/started" -print 2>/dev/null || true)
    [ -n "$found" ] || return 0
    stray=$found
    echo "${red}readme: $name wrote packages into the repository (removed; write them under /tmp):${reset}" >&2
    while IFS= read -r f; do
        echo "  $f" >&2
        rm -f "$f"
    done <<<"$found"
}
# The blocks' session: SIGTERM to its whole process group (the runtime started in the
# background, its clients, a demo and its QEMU), then SIGKILL to whatever is left.
stop_session() {
    [ -n "$session" ] || return 0
    kill -TERM -- "-$session" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 -- "-$session" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$session" 2>/dev/null || true
    wait "$session" 2>/dev/null || true
    session=
}
cleanup() {
    local status=$?
    trap - ERR
    stop_session
    [ -d "$work" ] && remove_stray
    # The runtime's mounts were in its own mount namespace, gone with it: nothing under
    # $work is mounted here.
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The session's script: line N of it is line N of README.md, so $LINENO is the README's
# line number. Lines outside sh blocks (and of skipped blocks) are empty; the opening
# fence of a block that runs becomes `__block INDEX FIRST LAST`, which shows the block
# and records where the session is; /tmp/ is rewritten.
script=$work/readme.sh
# shellcheck disable=SC2016 # awk's own $0, not the shell's
extract='
    {
        line = $0
        if (!inside && line ~ /^```sh[[:space:]]*$/) {
            inside = 1; n++
            skip = (prev ~ /^[[:space:]]*<!--[[:space:]]*readme-test:[[:space:]]*skip/)
            start[n] = NR; skipped[n] = skip
            body[NR] = ""
        } else if (inside && line ~ /^```[[:space:]]*$/) {
            inside = 0; stop[n] = NR
            body[NR] = ""
        } else if (inside && !skip) {
            gsub(/\/tmp\//, tmp, line)
            body[NR] = line
        } else {
            body[NR] = ""
        }
        prev = $0
    }
    END {
        if (inside) { printf "unterminated ```sh block from line %d\n", start[n] > "/dev/stderr"; exit 1 }
        ran = 0
        for (i = 1; i <= n; i++) {
            printf "%d %d %d %d\n", i, start[i] + 1, stop[i] - 1, skipped[i] > list
            if (!skipped[i]) { ran++; body[start[i]] = sprintf("__block %d %d %d", i, start[i] + 1, stop[i] - 1) }
        }
        body[1] = "source " pre (body[1] == "" ? "" : "; " body[1])
        for (i = 1; i <= NR; i++) print body[i] > out
        print ran
    }'
blocks=$(awk -v tmp="$work/tmp/" -v pre="$work/preamble.sh" -v list="$work/blocks" -v out="$script" \
    "$extract" "$readme") || die "cannot read the sh blocks of $readme"
total=$(wc -l <"$work/blocks")
[ "$blocks" -gt 0 ] || die "$name has no sh block to run"

cat >"$work/preamble.sh" <<EOF
# Sourced by line 1 of the session's script (tools/readme-test.sh).
set -Eeuo pipefail
__readme='$readme'
__status='$work/status'
__blocks=$total
__block() {
    echo "\$1 \$2 \$3" >"\$__status"
    printf '\n%s# %s block %d of %d, lines %d-%d%s\n' '$bold' '$name' "\$1" "\$__blocks" "\$2" "\$3" '$reset'
    sed -n "\$2,\$3p" "\$__readme" | sed 's/^/${dim}  \$ /; s/\$/${reset}/'
}
trap '__rc=\$?; echo "${red}readme: $name line \$LINENO: \\\`\$BASH_COMMAND\\\` failed (exit code \$__rc)${reset}" >&2; echo "\$LINENO \$__rc \$BASH_COMMAND" >"\$__status.failed"' ERR
EOF

start=$(date +%s)
echo "${bold}readme: running $blocks of the $total sh blocks of $name as root in one bash session (/tmp/ is $work/tmp/)${reset}"
# setsid: the session gets its own process group, which cleanup stops as a whole.
setsid bash "$script" </dev/null &
session=$!
code=0
wait "$session" || code=$?
# Whatever the blocks left running (a runtime never shut down, a follower) goes now.
stop_session
remove_stray
[ -z "$stray" ] || [ "$code" -ne 0 ] || code=1

elapsed=$(($(date +%s) - start))
if [ "$code" -eq 0 ]; then
    echo "${green}readme: $blocks block$([ "$blocks" -eq 1 ] || echo s) passed ($((total - blocks)) skipped) in $elapsed s${reset}"
    exit 0
fi
where=
if [ -f "$work/status" ]; then
    read -r index first last <"$work/status"
    where="block $index (lines $first-$last)"
fi
if [ -f "$work/status.failed" ]; then
    read -r line rc command <"$work/status.failed"
    echo "${red}readme: FAILED: $name $where, line $line: \`$command\` exited with $rc (after $elapsed s)${reset}" >&2
else
    echo "${red}readme: FAILED: $name ${where:-before the first block}: the session ended with exit code $code (after $elapsed s)${reset}" >&2
fi
exit 1
