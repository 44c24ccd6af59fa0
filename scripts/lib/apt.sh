# Shared by the setup scripts (sourced, not run): apt as root (or through sudo), with Debian
# bookworm-backports among apt's sources, `apt-get update` at most once per script.
#
# Mesa comes from bookworm-backports (25.x) for everything: lavapipe there imports dma-buf fds
# (bookworm's 22.3.6 does not), and libgbm-dev must match the libgbm1 that mesa-vulkan-drivers
# pulls in, so no script installs a Mesa package from plain bookworm.

APT_SUDO=""
if [ "$(id -u)" != 0 ]; then APT_SUDO=sudo; fi
APT_UPDATED=0

apt_backports_source() {
    local f=/etc/apt/sources.list.d/bookworm-backports.sources
    if [ ! -f "$f" ]; then
        echo "setup: adding bookworm-backports to apt's sources" >&2
        $APT_SUDO tee "$f" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        APT_UPDATED=0
    fi
}

apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        $APT_SUDO apt-get update -qq >/dev/null || return 1
        APT_UPDATED=1
    fi
}

# apt_install_backports PKG...: installs the packages from bookworm-backports.
apt_install_backports() {
    apt_backports_source
    apt_update_once || return 1
    DEBIAN_FRONTEND=noninteractive $APT_SUDO apt-get install -y -qq -t bookworm-backports \
        --no-install-recommends "$@" >/dev/null
}
