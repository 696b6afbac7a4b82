#!/usr/bin/env bash
# Runs every test of the project: unit tests, stack-to-stack tests over the in-memory link, the
# tests against the Linux kernel in network namespaces (root), and the fuzz corpora replay.
# Installs what a fresh machine lacks first (as root). Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
    sh scripts/install-deps.sh
else
    echo "test.sh: not root: system packages not checked; namespace and AF_XDP tests will skip" >&2
fi
exec cargo test --workspace
