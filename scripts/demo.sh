#!/usr/bin/env bash
# Builds cnet and runs its demo. As root with AF_XDP, the demo runs the stack on AF_XDP in a
# network namespace against the Linux kernel; `--mem` runs two stacks over the in-memory link.
# Installs what a fresh machine lacks first (as root). Usage: bash scripts/demo.sh [--mem]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
    sh scripts/install-deps.sh
fi
exec cargo run --release -q -p cnet-apps --bin cnet -- demo "$@"
