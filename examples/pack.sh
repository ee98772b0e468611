#!/usr/bin/env bash
# Packs (and signs) the example packages for a board's architecture, or for this host's.
#
#   examples/pack.sh --arch arm|aarch64|x86_64 --out DIR [--key KEY] [--busybox PATH] [NAME...]
#
# --arch: arm (qemu-armv7), aarch64 (qemu-aarch64) or x86_64 (the runtime on this host,
# README's "The runtime binary"; busybox from Debian's amd64 busybox-static).
# NAME: folders under examples/ (default: every folder with a manifest.toml). Each package
# is packed from a staging copy of examples/NAME/root: when examples/NAME/applets exists,
# Debian's static busybox for the architecture goes in as /bin/busybox (from
# board/fetch-busybox.sh unless --busybox names one) and every applet named in that file
# (one a line) becomes a /bin/APPLET symlink to it. The binary is never committed.
# Without --key the packages are unsigned (for a keyless repository). Prints the path of
# each package written. Uses target/release/npk, building it if needed ($NPK overrides).
set -Eeuo pipefail
trap 'echo "pack.sh: error: line $LINENO: \`$BASH_COMMAND\` failed (exit code $?)" >&2' ERR

die() {
    echo "pack: error: $*" >&2
    exit 1
}
usage="usage: $0 --arch arm|aarch64|x86_64 --out DIR [--key KEY] [--busybox PATH] [NAME...]"

examples=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$examples")
arch= out= key= busybox=
names=()
while [ $# -gt 0 ]; do
    case "$1" in
    --arch) arch=${2:?$usage}; shift 2 ;;
    --out) out=${2:?$usage}; shift 2 ;;
    --key) key=${2:?$usage}; shift 2 ;;
    --busybox) busybox=${2:?$usage}; shift 2 ;;
    -*) die "$usage" ;;
    *) names+=("$1"); shift ;;
    esac
done
[ -n "$arch" ] && [ -n "$out" ] || die "$usage"
case "$arch" in
arm | aarch64 | x86_64) ;;
*) die "--arch must be arm or aarch64 (the boards' architectures) or x86_64 (this host's), not $arch" ;;
esac
if [ ${#names[@]} -eq 0 ]; then
    for m in "$examples"/*/manifest.toml; do
        names+=("$(basename "$(dirname "$m")")")
    done
fi

npk=${NPK:-$repo/target/release/npk}
if [ -z "${NPK:-}" ]; then
    (cd "$repo" && cargo build --release --quiet -p nanostar-tools --bin npk) || die "cannot build npk"
fi
[ -x "$npk" ] || die "no npk at $npk"
[ -z "$busybox" ] || [ -f "$busybox" ] || die "--busybox $busybox: no such file"

mkdir -p "$out" || die "cannot create $out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for name in "${names[@]}"; do
    dir="$examples/$name"
    [ -f "$dir/manifest.toml" ] || die "no example $name ($dir/manifest.toml)"
    root="$stage/$name"
    mkdir -p "$root"
    [ -d "$dir/root" ] && cp -a "$dir/root/." "$root/"
    if [ -f "$dir/applets" ]; then
        if [ -z "$busybox" ]; then
            busybox=$("$repo/board/fetch-busybox.sh" "$arch" | tail -n1) || die "cannot fetch busybox for $arch"
        fi
        mkdir -p "$root/bin"
        install -m 0755 "$busybox" "$root/bin/busybox"
        while read -r applet; do
            [ -n "$applet" ] && ln -sf busybox "$root/bin/$applet"
        done <"$dir/applets"
    fi
    args=(pack --manifest "$dir/manifest.toml" --root "$root" --arch "$arch" --out "$out")
    [ -n "$key" ] && args+=(--key "$key")
    "$npk" "${args[@]}" >&2 || die "npk pack of $name failed"
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$dir/manifest.toml" | head -n1)
    echo "$out/$name-$version.npk"
done
