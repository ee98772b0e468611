#!/usr/bin/env bash
# Builds the Linux kernel of one board and prints its path as the last line of stdout.
#
#   board/build-kernel.sh BOARD        BOARD: a folder name under board/ (qemu-armv7,
#                                      qemu-aarch64) or a path to a board folder
#   board/build-kernel.sh --deps       only install the Debian packages the builds and
#                                      the boards need (compilers, source, QEMU); `./x`
#                                      runs this first
#
# The kernel is Debian's linux-source-6.1, configured as `make tinyconfig` plus the
# board's kernel.config fragment, built with Debian's cross compiler. Everything the
# build needs is installed with apt-get when missing (as root). Results are cached:
#
#   $CACHE/linux-source-<debian version>/   the unpacked source (once per version)
#   $CACHE/build/<board>-<debian version>/  the out-of-tree build (kept, so a changed
#                                           fragment rebuilds in seconds, not minutes)
#   $CACHE/kernels/<board>-<hash>/          the image and its .config (the latest build
#                                           of each board only)
#
# CACHE is $NANOSTAR_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/nanostar. The hash covers the
# source version, the board's [kernel] settings, the compiler version, the fragment and
# this script, so a rerun with the same inputs prints the cached path in well under a
# second. One build runs at a time (a lock), because a kernel build wants both cores.
#
# After `make olddefconfig` every line of the fragment is checked against the resulting
# .config: Kconfig silently drops a symbol whose dependencies are unmet, and that must
# fail here, not as a strange boot failure later.
set -Eeuo pipefail
trap 'echo "build-kernel.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR

die() {
    echo "build-kernel: error: $*" >&2
    exit 1
}
say() { echo "build-kernel: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 BOARD (a folder under board/, e.g. qemu-armv7, or a path to one) | $0 --deps"

# Build dependencies: Debian package -> a file that proves it is installed. Checked by
# file, so the common case (all present) costs no dpkg or apt call.
missing=()
find_missing() {
    local pkg file
    missing=()
    while read -r pkg file; do
        [ -e "$file" ] || missing+=("$pkg")
    done <<EOF
linux-source-6.1 /usr/src/linux-source-6.1.tar.xz
gcc /usr/bin/gcc
libc6-dev /usr/include/stdio.h
gcc-arm-linux-gnueabihf /usr/bin/arm-linux-gnueabihf-gcc
gcc-aarch64-linux-gnu /usr/bin/aarch64-linux-gnu-gcc
flex /usr/bin/flex
bison /usr/bin/bison
bc /usr/bin/bc
libssl-dev /usr/include/openssl/ssl.h
make /usr/bin/make
xz-utils /usr/bin/xz
qemu-system-arm /usr/bin/qemu-system-aarch64
EOF
}
ensure_packages() {
    find_missing
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -ne 0 ]; then
        die "missing packages; install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    # apt one caller at a time among nanostar's scripts (the tests build both boards'
    # kernels at once): apt-get fails at once, not waits, when another apt holds its
    # lock. DPkg::Lock::Timeout makes it wait for anyone else's apt.
    local lock_dir=/run/lock lock_fd
    [ -d "$lock_dir" ] || lock_dir=/tmp
    exec {lock_fd}>>"$lock_dir/nanostar-apt.lock"
    if ! flock -n "$lock_fd"; then
        say "waiting for another apt-get (lock $lock_dir/nanostar-apt.lock)"
        flock "$lock_fd"
    fi
    find_missing # the one we waited for may have installed them
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get update -qq -o DPkg::Lock::Timeout=600 >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=600 "${missing[@]}" >&2 ||
            die "apt-get install ${missing[*]} failed"
        find_missing
        [ ${#missing[@]} -eq 0 ] || die "still missing after apt-get install: ${missing[*]}"
    fi
    exec {lock_fd}>&-
}
if [ "$1" = --deps ]; then
    ensure_packages
    exit 0
fi

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$script_dir/$(basename "${BASH_SOURCE[0]}")"
case "$1" in
*/*) board_dir=$(cd "$1" 2>/dev/null && pwd) || die "no board folder $1" ;;
*) board_dir="$script_dir/$1" ;;
esac
board=$(basename "$board_dir")
fragment="$board_dir/kernel.config"
board_toml="$board_dir/board.toml"
if [ ! -f "$board_toml" ]; then
    known=()
    for f in "$script_dir"/*/board.toml; do
        [ -f "$f" ] && known+=("$(basename "$(dirname "$f")")")
    done
    die "no $board_toml (known boards: ${known[*]})"
fi
[ -f "$fragment" ] || die "no $fragment"

# A string value from the [kernel] table of board.toml. Only single-line `key = "value"`
# entries are read: that is all the [kernel] table holds.
kernel_key() {
    local value
    value=$(awk -v key="$1" '
        /^[[:space:]]*\[/ { table = $0; gsub(/[[:space:]]/, "", table); next }
        table == "[kernel]" && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
        }' "$board_toml")
    [ -n "$value" ] || die "$board_toml: [kernel] has no $1 = \"...\""
    printf '%s\n' "$value"
}
arch=$(kernel_key arch)
cross=$(kernel_key cross_compile)
image=$(kernel_key image)

ensure_packages
command -v "${cross}gcc" >/dev/null || die "${cross}gcc not found (board.toml [kernel] cross_compile = \"$cross\")"

src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1) ||
    die "cannot read the version of linux-source-6.1 (dpkg-query failed)"
cache=${NANOSTAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nanostar}
hash=$( {
    printf 'source %s\narch %s\ncross %s\nimage %s\ncc %s\n' \
        "$src_version" "$arch" "$cross" "$image" "$("${cross}gcc" --version | head -n1)"
    printf -- '--- fragment\n'
    cat "$fragment"
    printf -- '--- script\n'
    cat "$script"
} | sha256sum | cut -c1-16)
out_dir="$cache/kernels/$board-$hash"
out="$out_dir/$image"

if [ -f "$out" ]; then
    echo "$out"
    exit 0
fi

mkdir -p "$cache/kernels" "$cache/build"
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
    say "waiting for another kernel build to finish (lock $cache/.build.lock)"
    flock 9
fi
# The build we waited for may have been this one.
if [ -f "$out" ]; then
    echo "$out"
    exit 0
fi

# The source tree, unpacked once per Debian version; a marker file tells a complete
# unpack from one cut short.
src="$cache/linux-source-$src_version"
if [ ! -f "$src/.nanostar-unpacked" ]; then
    say "unpacking /usr/src/linux-source-6.1.tar.xz into $src (about 15 s, 1.5 GB)"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -C "$src.tmp" -xf /usr/src/linux-source-6.1.tar.xz
    mv "$src.tmp/linux-source-6.1" "$src"
    rmdir "$src.tmp"
    touch "$src/.nanostar-unpacked"
fi

build="$cache/build/$board-$src_version"
mkdir -p "$build"
log="$build/nanostar-build.log"
: >"$log"
kmake() {
    make -C "$src" O="$build" ARCH="$arch" CROSS_COMPILE="$cross" "$@" >>"$log" 2>&1 ||
        die "make $* failed; the last lines of $log:
$(tail -n 30 "$log")"
}

say "configuring $board: tinyconfig + $fragment"
kmake tinyconfig
ARCH="$arch" CROSS_COMPILE="$cross" "$src/scripts/kconfig/merge_config.sh" -m -O "$build" \
    "$build/.config" "$fragment" >>"$log" 2>&1 || die "merge_config.sh failed; see $log"
kmake olddefconfig

# Every `CONFIG_X=value` of the fragment must be in the final .config as written, and
# every `# CONFIG_X is not set` must not be enabled.
missing=()
while IFS= read -r line; do
    case "$line" in
    CONFIG_*=*)
        grep -qxF -- "$line" "$build/.config" || missing+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$build/.config" || echo absent))")
        ;;
    "# CONFIG_"*" is not set")
        sym=${line#\# }
        sym=${sym%% *}
        if grep -qE "^$sym=" "$build/.config"; then
            missing+=("$line (got: $(grep -E "^$sym=" "$build/.config"))")
        fi
        ;;
    esac
done <"$fragment"
if [ ${#missing[@]} -gt 0 ]; then
    printf 'build-kernel: error: the .config does not have what these lines of %s ask for:\n' "$fragment" >&2
    printf '  %s\n' "${missing[@]}" >&2
    printf 'Usually a dependency is off: enable it in the fragment too. To see why, look the symbol up (press /) in\n' >&2
    printf '  make -C %s O=%s ARCH=%s menuconfig\n' "$src" "$build" "$arch" >&2
    exit 1
fi

say "building $image for $board with -j2 (about 3 minutes from scratch; log: $log)"
start=$(date +%s)
kmake -j2 "$image"
say "built in $(($(date +%s) - start)) s"

rm -rf "$out_dir.tmp"
mkdir -p "$out_dir.tmp"
cp "$build/arch/$arch/boot/$image" "$out_dir.tmp/$image"
cp "$build/.config" "$out_dir.tmp/config"
rm -rf "$out_dir"
mv "$out_dir.tmp" "$out_dir"
# Kernels of this board built from other inputs are stale; an incremental rebuild brings
# one back in seconds, so the cache stays at one image per board.
find "$cache/kernels" -mindepth 1 -maxdepth 1 -type d -name "$board-????????????????" ! -name "$board-$hash" \
    -exec rm -rf {} +
say "$(stat -c %s "$out") bytes: $out"
echo "$out"
