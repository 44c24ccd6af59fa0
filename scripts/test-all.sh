#!/usr/bin/env bash
# Every test of the project, in its two tiers:
#   1. `cargo test --workspace`: the workspace's own tests on the simulated machine, with the
#      GPU stage of `devmmu pipeline` on Mesa's lavapipe (scripts/setup-vulkan.sh installs it:
#      apt as root; DEVMMU_REQUIRE_VULKAN=1 makes the Vulkan tests fail instead of skip);
#   2. scripts/kernel/test.sh: the real-kernel tier, in a QEMU guest running Debian's 6.12
#      kernel with an emulated IOMMU, the edu DMA engine, udmabuf, dma-heap and vgem (the first
#      run installs QEMU, the kernel and virtme-ng: apt as root, cached under target/kernel).
# Exit status 0 only if both passed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-vulkan.sh
DEVMMU_REQUIRE_VULKAN=1 cargo test --workspace
scripts/kernel/test.sh
