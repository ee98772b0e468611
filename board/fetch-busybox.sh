#!/usr/bin/env bash
# Fetches Debian's busybox-static for one architecture and prints the path of the static
# `busybox` binary as the last line of stdout.
#
#   board/fetch-busybox.sh ARCH [--refresh]
#
# ARCH: armhf (also accepted: arm, armv7, qemu-armv7), arm64 (aarch64, qemu-aarch64) or
# amd64 (x86_64, for packages that run on this host's runtime).
#
# The binary is a third-party static program for the example packages (examples/): a
# shell and the usual tools, copied into a package root at pack time, never committed.
# It is cached as
#
#   $CACHE/busybox/<arch>-<version>/busybox
#
# with CACHE as in build-kernel.sh ($NANOSTAR_CACHE, else ~/.cache/nanostar; created if
# missing). A rerun prints the newest cached build at once; `--refresh` (as root) fetches
# a newer Debian version if apt knows one. The first run, as root: `dpkg
# --add-architecture ARCH` if needed (not for the host's own), `apt-get update`, `apt-get
# download busybox-static:ARCH`, `dpkg-deb -x`. Nothing is installed.
set -Eeuo pipefail
trap 'echo "fetch-busybox.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR

die() {
    echo "fetch-busybox: error: $*" >&2
    exit 1
}
say() { echo "fetch-busybox: $*" >&2; }

usage="usage: $0 ARCH [--refresh] (ARCH: armhf, arm64 or amd64)"
[ $# -eq 1 ] || { [ $# -eq 2 ] && [ "$2" = --refresh ]; } || die "$usage"
case "$1" in
armhf | arm | armv7 | qemu-armv7) arch=armhf machine=28 ;;        # EM_ARM = 0x28
arm64 | aarch64 | qemu-aarch64) arch=arm64 machine=b7 ;;          # EM_AARCH64 = 0xb7
amd64 | x86_64 | x86-64) arch=amd64 machine=3e ;;                 # EM_X86_64 = 0x3e
*) die "unknown architecture $1: want armhf (32-bit ARM), arm64 or amd64 (x86_64)" ;;
esac
cache=${NANOSTAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nanostar}/busybox
mkdir -p "$cache" || die "cannot create the cache folder $cache"

# The newest cached build, if any: a rerun prints it at once, without asking apt
# (--refresh asks apt for a newer version first).
refresh=
[ "${2:-}" = --refresh ] && refresh=1
newest_cached() {
    local found=()
    shopt -s nullglob
    for f in "$cache/$arch"-*/busybox; do
        [ -x "$f" ] && found+=("$f")
    done
    shopt -u nullglob
    [ ${#found[@]} -eq 0 ] || printf '%s\n' "${found[@]}" | sort -V | tail -n1
}
cached=$(newest_cached)
if [ -n "$cached" ] && [ -z "$refresh" ]; then
    echo "$cached"
    exit 0
fi

# The version apt would fetch, from the local package lists (no network); empty if apt
# does not know the package for this architecture yet.
candidate() {
    { apt-cache policy "busybox-static:$arch" 2>/dev/null || true; } |
        awk '/Candidate:/ && $2 != "(none)" { print $2; exit }'
}
# A directory name for a Debian version: the epoch ("1:") dropped.
dir_for() { printf '%s/%s-%s\n' "$cache" "$arch" "${1#*:}"; }

if [ "$(id -u)" -ne 0 ]; then
    # Without root apt cannot learn about a new architecture; the cached build will do.
    [ -n "$cached" ] && { echo "$cached"; exit 0; }
    die "busybox-static:$arch is not cached; run this script as root once (it uses dpkg --add-architecture $arch, apt-get update and apt-get download)"
fi
for tool in apt-get apt-cache dpkg dpkg-deb; do
    command -v "$tool" >/dev/null || die "$tool not found: this script needs Debian's apt and dpkg"
done

# apt and dpkg one caller at a time among nanostar's scripts (the kernel builds of both
# boards may start together): apt-get fails at once, without waiting, when another apt
# holds its lock. DPkg::Lock::Timeout makes it wait for anyone else's apt.
lock_dir=/run/lock
[ -d "$lock_dir" ] || lock_dir=/tmp
exec {apt_lock}>>"$lock_dir/nanostar-apt.lock"
flock "$apt_lock"

if [ "$arch" != "$(dpkg --print-architecture)" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    say "dpkg --add-architecture $arch (to download, not install, $arch packages)"
    dpkg --add-architecture "$arch" || die "dpkg --add-architecture $arch failed"
fi
version=$(candidate)
if [ -z "$version" ]; then
    say "apt-get update"
    # A failing index (a mirror mid-sync) need not matter: the package may still be known.
    apt-get update -qq -o DPkg::Lock::Timeout=600 >&2 || say "apt-get update reported errors; trying anyway"
    version=$(candidate)
    [ -n "$version" ] || die "apt knows no busybox-static for $arch (is a Debian mirror in /etc/apt/sources.list?)"
fi
dir=$(dir_for "$version")
if [ -x "$dir/busybox" ]; then
    echo "$dir/busybox"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say "apt-get download busybox-static:$arch ($version)"
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "busybox-static:$arch=$version" >&2) ||
    die "apt-get download busybox-static:$arch=$version failed"
deb=$(find "$work" -maxdepth 1 -name 'busybox-static_*.deb' | head -n1)
[ -n "$deb" ] || die "apt-get download left no .deb in $work"
dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb -x $deb failed"
bin="$work/root/bin/busybox"
[ -f "$bin" ] || die "$deb has no bin/busybox"
# An ELF file for the right machine (byte 18 of the header, little-endian).
got=$(od -An -tx1 -j18 -N1 "$bin" | tr -d ' ')
[ "$(head -c4 "$bin" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && [ "$got" = "$machine" ] ||
    die "$bin is not an ELF program for $arch (machine 0x$got)"

# Into place atomically: a folder is either complete or absent.
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
install -m 0755 "$bin" "$dir.tmp/busybox"
cp "$deb" "$dir.tmp/"
rm -rf "$dir"
mv -T "$dir.tmp" "$dir"
say "$(stat -c %s "$dir/busybox") bytes: $dir/busybox"
echo "$dir/busybox"
