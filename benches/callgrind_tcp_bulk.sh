#!/usr/bin/env bash
# Instructions per received byte of in-memory bulk TCP, cnet against smoltcp, lean build, link
# share removed (issue #17, TCP part).
#
#   benches/callgrind_tcp_bulk.sh [MIB] [VARIANTS]   (defaults: MIB=32, VARIANTS="cnet smoltcp")
#
# For each variant: one callgrind run of `tcp_bulk --bytes MIB MiB` and one of 1 MiB, both after
# the same 4 MiB warm-up on a fresh pair; (difference) / (MIB - 1 MiB) is the cost of one byte
# moved (client stack, server stack, both applications' copies). The link's share (inclusive
# `Wire::push` + `Wire::pop_into`, taken the same way) is removed. Also printed: the receiver's
# pure ACKs per GiB (from the benchmark's own count). Needs valgrind.
set -euo pipefail

MIB=${1:-32}
VARIANTS=${2:-"cnet smoltcp"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
OUT=${OUT:-$CARGO_TARGET_DIR/callgrind-tcp-bulk}
BIN=${BIN:-$CARGO_TARGET_DIR/lean/tcp_bulk}

command -v valgrind >/dev/null || {
    echo "valgrind not found: apt-get install -y valgrind" >&2
    exit 1
}
if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build -q --profile lean -p cnet-benches --no-default-features --bin tcp_bulk >&2)
fi
mkdir -p "$OUT"

# Prints "<total Ir> <link Ir> <acks_per_gib>" of one callgrind run of $1 for $2 bytes.
run_ir() {
    local v=$1 bytes=$2
    local file=$OUT/$v-b$bytes.out
    valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" --only "$v" \
        --bytes "$bytes" --warmup $((4 << 20)) --runs 1 >"$file.txt" 2>"$file.log"
    local total link acks
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$file")
    link=$(callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$file" 2>/dev/null |
        awk '/\/benches\/src\/link\.rs:cnet_benches::link::Wire::(push|pop_into)( \[.*)?$/ { gsub(",", "", $1); s += $1 }
             END { printf "%d\n", s }')
    acks=$(sed -n 's/.* acks_per_gib=\([0-9]*\).*/\1/p' "$file.txt")
    echo "$total $link $acks"
}

declare -A PER
for v in $VARIANTS; do
    read -r t0 l0 _ < <(run_ir "$v" $((1 << 20)))
    read -r t1 l1 acks < <(run_ir "$v" $((MIB << 20)))
    n=$(((MIB - 1) << 20))
    PER[$v]=$(awk -v t="$((t1 - t0))" -v l="$((l1 - l0))" -v n="$n" 'BEGIN { printf "%.3f", (t - l) / n }')
    awk -v v="$v" -v t="$((t1 - t0))" -v l="$((l1 - l0))" -v n="$n" -v a="$acks" 'BEGIN {
        printf "callgrind_tcp_bulk variant=%s mib=%d instr_per_byte=%.3f link_per_byte=%.3f stack_per_byte=%.3f stack_per_1460=%.0f acks_per_gib=%s\n",
            v, n / 1048576, t / n, l / n, (t - l) / n, (t - l) / n * 1460, a }'
done
if [ -n "${PER[cnet]:-}" ] && [ -n "${PER[smoltcp]:-}" ]; then
    awk -v c="${PER[cnet]}" -v s="${PER[smoltcp]}" 'BEGIN { printf "callgrind_tcp_bulk_ratio smoltcp_over_cnet=%.2f\n", s / c }'
fi
echo "# profiles: $OUT (callgrind_annotate --inclusive=yes $OUT/cnet-b$((MIB << 20)).out)"
