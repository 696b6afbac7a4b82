#!/usr/bin/env bash
# Instructions per stack traversal, cnet against smoltcp, lean build, link share removed
# (issue #17).
#
#   benches/callgrind_lean.sh [N] [PAYLOAD] [WINDOW]   (defaults: N=100000, PAYLOAD=64, WINDOW=32)
#
# Both stacks run over the same wire (benches/src/link.rs) in the `lean` profile (lto = "fat",
# codegen-units = 1, panic = "abort"). For each stack: one callgrind run of N echoes after the
# warm-up and one of 0 echoes after the same warm-up; the difference over N is the cost of one
# echoed packet (four stack traversals: client tx, server rx, server tx, client rx; two link
# crossings). The link's share is the inclusive cost of `link::Wire::push` and
# `link::Wire::pop_into` (never inlined; their own entries in callgrind_annotate, the same sum as
# `--toggle-collect` on them gives), taken the same way (N minus 0), and is subtracted. Printed: instructions per echoed packet with and without the link, per traversal,
# and the ratio smoltcp/cnet (> 1: cnet needs fewer instructions). Profiles stay in $OUT.
# Needs valgrind (apt-get install -y valgrind).
set -euo pipefail

N=${1:-100000}
PAYLOAD=${2:-64}
WINDOW=${3:-32}
WARMUP=${WARMUP:-20000}
STACKS=${STACKS:-"cnet-copy smoltcp"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
OUT=${OUT:-$CARGO_TARGET_DIR/callgrind-lean}
BIN=${BIN:-$CARGO_TARGET_DIR/lean/udp_echo}

command -v valgrind >/dev/null || {
    echo "valgrind not found: apt-get install -y valgrind" >&2
    exit 1
}
if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build -q --profile lean -p cnet-benches --no-default-features --bin udp_echo >&2)
fi
mkdir -p "$OUT"

# Prints "<total Ir> <link Ir>" of one callgrind run of one stack for $2 echoes.
run_ir() {
    local stack=$1 count=$2
    local file=$OUT/$stack-p$PAYLOAD-w$WINDOW-n$count.out
    valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" --only "$stack" \
        --payload "$PAYLOAD" --window "$WINDOW" --warmup "$WARMUP" --runs 1 --count "$count" \
        >/dev/null 2>"$file.log"
    local total link
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$file")
    link=$(callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$file" 2>/dev/null |
        awk '/\/benches\/src\/link\.rs:cnet_benches::link::Wire::(push|pop_into)( \[.*)?$/ { gsub(",", "", $1); s += $1 }
             END { printf "%d\n", s }')
    echo "$total $link"
}

declare -A STACK_IR
for stack in $STACKS; do
    read -r t0 l0 < <(run_ir "$stack" 0)
    read -r t1 l1 < <(run_ir "$stack" "$N")
    per=$(( (t1 - t0) / N ))
    link=$(( (l1 - l0) / N ))
    STACK_IR[$stack]=$(( per - link ))
    echo "callgrind_lean stack=$stack payload=$PAYLOAD window=$WINDOW n=$N instr_per_packet=$per link_per_packet=$link stack_per_packet=${STACK_IR[$stack]} stack_per_traversal=$(( STACK_IR[$stack] / 4 ))"
done
if [ -n "${STACK_IR[cnet-copy]:-}" ] && [ -n "${STACK_IR[smoltcp]:-}" ]; then
    awk -v c="${STACK_IR[cnet-copy]}" -v s="${STACK_IR[smoltcp]}" -v p="$PAYLOAD" -v w="$WINDOW" \
        'BEGIN { printf "callgrind_lean_ratio payload=%d window=%d smoltcp_over_cnet=%.2f\n", p, w, s / c }'
fi
echo "# profiles: $OUT (callgrind_annotate --inclusive=yes $OUT/cnet-copy-p$PAYLOAD-w$WINDOW-n$N.out)"
