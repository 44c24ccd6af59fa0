#!/usr/bin/env bash
# Installs what the GPU stage of `devmmu pipeline` and its tests need, idempotently: the Vulkan
# loader (libvulkan1) and Mesa's Vulkan drivers from bookworm-backports (mesa-vulkan-drivers
# 25.x: lavapipe, a CPU Vulkan 1.4 driver that imports dma-buf fds and host pointers). Does
# nothing when lavapipe is already there. Fails with one line if it cannot install.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/apt.sh

ICD=/usr/share/vulkan/icd.d/lvp_icd.json
installed_from_backports() {
    dpkg-query -W -f '${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q bpo
}
if [ -f "$ICD" ] && installed_from_backports && dpkg -s libvulkan1 >/dev/null 2>&1; then
    exit 0
fi
echo "setup-vulkan: installing mesa-vulkan-drivers and libvulkan1 from bookworm-backports" >&2
apt_install_backports mesa-vulkan-drivers libvulkan1 \
    || { echo "setup-vulkan: FAILED: apt-get install mesa-vulkan-drivers" >&2; exit 1; }
[ -f "$ICD" ] || { echo "setup-vulkan: FAILED: no $ICD after installing" >&2; exit 1; }
