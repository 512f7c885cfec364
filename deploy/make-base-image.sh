#!/usr/bin/env bash
# Make the local Debian 12 base image for building medserve without a registry:
#
#   deploy/make-base-image.sh            # -> localhost/medserve-base:bookworm (skipped if present)
#   deploy/make-base-image.sh --force    # rebuild it
#
# debootstrap (minbase) from the Debian mirror apt on this machine already uses, then Debian's
# python3.11 + python3.11-venv + ca-certificates inside it, imported into podman. The result plays
# the part of python:3.11-slim-bookworm: build with --build-arg BASE_IMAGE=<this image>.
#
# The trust anchors this machine added to its own store (/usr/local/share/ca-certificates, e.g.
# a TLS-inspecting egress proxy's CA) are added to the base too, so pip inside a build can reach
# the package index the way the host does. A base made elsewhere carries that machine's anchors.
#
# Needs root, debootstrap and podman. Environment: MEDSERVE_BASE_IMAGE (the tag), DEBIAN_MIRROR
# (default: the first Debian mirror in apt's sources), DEBIAN_SUITE (default bookworm).
set -euo pipefail

IMAGE="${MEDSERVE_BASE_IMAGE:-localhost/medserve-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
PACKAGES=(python3.11 python3.11-venv ca-certificates)

die() { echo "make-base-image: $*" >&2; exit 1; }

if [[ "${1:-}" != "--force" ]] && podman image exists "$IMAGE"; then
    echo "make-base-image: $IMAGE exists (cached; --force rebuilds it)"
    exit 0
fi
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"
command -v podman >/dev/null || die "podman is not installed (apt-get install -y podman runc)"

# "URI suite [suite...]" for every Debian entry of apt's sources, one-line and deb822 formats.
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                           print $i, $(i + 1) }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             { uri = ""; suites = ""; enabled = 1; deb = 0
               for (n = 1; n <= NF; n++) {
                 if ($n ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", $n); split($n, u, " "); uri = u[1] }
                 if ($n ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", $n); suites = $n }
                 if ($n ~ /^Types:.*deb( |$)/) deb = 1
                 if ($n ~ /^Enabled:[ \t]*no/) enabled = 0 }
               if (deb && enabled && uri != "") print uri, suites }' "$f"
    done
}

SOURCES=$(apt_sources | grep -E "[[:space:]]${SUITE}([[:space:]-]|$)" || true)
MIRROR="${DEBIAN_MIRROR:-$(awk -v s="$SUITE" '{ for (i = 2; i <= NF; i++) if ($i == s) { print $1; exit } }' <<<"$SOURCES")}"
[[ -n $MIRROR ]] || die "no Debian mirror for $SUITE in apt's sources; set DEBIAN_MIRROR"

ROOTFS=$(mktemp -d /var/tmp/medserve-base.XXXXXX)
cleanup() {
    for m in proc sys dev; do umount -l "$ROOTFS/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

echo "make-base-image: debootstrap $SUITE from $MIRROR into $ROOTFS"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
    || { tail -30 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; die "debootstrap failed"; }
rm -f "$ROOTFS.log"

# The same suites apt uses here (updates, security), so the base gets Debian's fixes.
{
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then
        echo "deb $DEBIAN_MIRROR $SUITE main"
    else
        while read -r uri suites; do
            for suite in $suites; do echo "deb $uri $suite main"; done
        done <<<"$SOURCES"
    fi
} >"$ROOTFS/etc/apt/sources.list"

mount -t proc proc "$ROOTFS/proc"
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod +x "$ROOTFS/usr/sbin/policy-rc.d"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
fi
echo "make-base-image: apt-get install ${PACKAGES[*]}"
# apt as root inside the chroot (its _apt user cannot use the folders debootstrap made) and
# dpkg without a pty (no /dev/pts in the chroot): the same result without the warnings.
mkdir -p "$ROOTFS/etc/apt/apt.conf.d"
printf 'APT::Sandbox::User "root";\nDpkg::Use-Pty "0";\n' >"$ROOTFS/etc/apt/apt.conf.d/00medserve-base"
chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -ec "apt-get update -qq
            apt-get install -y -qq --no-install-recommends ${PACKAGES[*]} >/dev/null
            apt-get clean
            rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old"
rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/apt/apt.conf.d/00medserve-base"
umount "$ROOTFS/proc"

echo "make-base-image: importing as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3.11"]' \
    --message "debootstrap --variant=minbase $SUITE $MIRROR + ${PACKAGES[*]}" \
    - "$IMAGE" >/dev/null
echo "make-base-image: $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)"
