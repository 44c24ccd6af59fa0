#!/usr/bin/env bash
# Installs what the real-kernel test tier needs, idempotently; prints the kernel it prepared.
#
# - Debian packages: qemu-system-x86 (bookworm-backports, QEMU 10), busybox-static (virtme-ng's
#   initramfs needs a statically linked busybox), udev (so vng passes the guest command's status and output back), kmod (depmod).
# - The Debian kernel linux-image-6.12.*-amd64-unsigned from bookworm-backports, downloaded and
#   extracted under target/kernel/ (never into /boot); its modules copied to /lib/modules/VERSION
#   and indexed with depmod, where the guest (sharing this machine's root read-only) finds them.
# - virtme-ng (PyPI) in a virtualenv under target/kernel/venv.
#
# Everything is cached: a second run does nothing but check. Output: the last line is
# `KERNEL=<path to vmlinuz>`. Fails with one line saying what is missing if it cannot install.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
KDIR=$ROOT/target/kernel
mkdir -p "$KDIR"

say() { echo "kernel-setup: $*" >&2; }
die() { echo "kernel-setup: FAILED: $*" >&2; exit 1; }

. scripts/lib/apt.sh
SUDO=$APT_SUDO
apt_backports_source

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v udevadm >/dev/null || need+=(udev)
command -v depmod >/dev/null || need+=(kmod)
# The gbm test links Mesa's libgbm: from bookworm-backports, like every Mesa package here
# (scripts/lib/apt.sh says why).
dpkg -s libgbm-dev >/dev/null 2>&1 || need+=(libgbm-dev)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt_update_once || die "apt-get update failed"
    export DEBIAN_FRONTEND=noninteractive
    for p in "${need[@]}"; do
        case $p in
            qemu) apt_install_backports qemu-system-x86 \
                      || die "apt-get install qemu-system-x86 failed" ;;
            libgbm-dev) apt_install_backports libgbm-dev || die "apt-get install libgbm-dev failed" ;;
            *) $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null \
                   || die "apt-get install $p failed" ;;
        esac
    done
fi

# The kernel: the newest plain (not -rt, not -cloud) 6.12 amd64 unsigned image in bookworm-backports.
VMLINUZ=$(ls "$KDIR"/root/boot/vmlinuz-6.12.* 2>/dev/null | head -n1 || true)
if [ -z "$VMLINUZ" ]; then
    apt_update_once || die "apt-get update failed"
    PKG=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' | awk '{print $1}' \
          | sort -V | tail -n1)
    [ -n "$PKG" ] || die "no linux-image-6.12.*-amd64-unsigned in apt's lists (bookworm-backports?)"
    say "downloading $PKG"
    # apt downloads as user _apt: into a directory it may write, then moved here.
    DL=$(mktemp -d) && chmod 777 "$DL"
    (cd "$DL" && apt-get download -qq "$PKG" >/dev/null) || die "apt-get download $PKG failed"
    rm -f "$KDIR"/*.deb && mv "$DL"/*.deb "$KDIR"/ && rmdir "$DL"
    rm -rf "$KDIR/root.tmp"
    dpkg-deb -x "$KDIR"/*.deb "$KDIR/root.tmp" || die "dpkg-deb -x failed"
    rm -rf "$KDIR/root" && mv "$KDIR/root.tmp" "$KDIR/root" && rm -f "$KDIR"/*.deb
    VMLINUZ=$(ls "$KDIR"/root/boot/vmlinuz-6.12.* | head -n1)
fi
VERSION=${VMLINUZ##*/vmlinuz-}
if [ ! -f "/lib/modules/$VERSION/modules.dep" ]; then
    say "installing modules of $VERSION into /lib/modules/$VERSION"
    $SUDO mkdir -p "/lib/modules/$VERSION"
    $SUDO cp -a "$KDIR/root/lib/modules/$VERSION/." "/lib/modules/$VERSION/"
    $SUDO depmod "$VERSION" || die "depmod $VERSION failed"
fi

VENV=$KDIR/venv
if [ ! -x "$VENV/bin/vng" ]; then
    say "installing virtme-ng into $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q virtme-ng >/dev/null || die "pip install virtme-ng failed"
fi
echo "KERNEL=$VMLINUZ"
