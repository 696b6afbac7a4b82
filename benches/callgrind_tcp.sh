#!/usr/bin/env bash
# Instructions per echoed TCP packet on one active cnet connection with few and with many idle
# established connections beside it (issue #6, benchmark 4), measured with callgrind.
#
#   benches/callgrind_tcp.sh [K] [LOW] [HIGH]   (defaults: K=20000 echoes, LOW=10, HIGH=100000)
#
# For each N in LOW, HIGH: `tcp_conns --only-echo --conns N` establishes N idle connections between
# two cnet stacks in memory, opens the echo connection and warms it up, then runs K echoes inside
# `measured_echoes`, the only function callgrind counts (--collect-atstart=no --toggle-collect).
# One run with K echoes and one with 0 (same set-up): (Ir(N, K) - Ir(N, 0)) / K is the cost of one
# echoed packet (request and reply, through both stacks and the link). Set-up (establishing 100 000
# connections takes a minute or two under valgrind) is simulated but not counted.
# Profiles in $OUT (default /work/target-bench/callgrind) for callgrind_annotate.
set -euo pipefail

K=${1:-20000}
LOW=${2:-10}
HIGH=${3:-100000}
PAYLOAD=${PAYLOAD:-64}
WINDOW=${WINDOW:-8}
WARMUP=${WARMUP:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
OUT=${OUT:-$CARGO_TARGET_DIR/callgrind}
BIN=$CARGO_TARGET_DIR/release/tcp_conns

command -v valgrind >/dev/null || {
    echo "valgrind not found: apt-get install -y valgrind" >&2
    exit 1
}
(cd "$ROOT" && cargo build --release -p cnet-benches --bin tcp_conns >&2)
mkdir -p "$OUT"

# Instructions counted inside measured_echoes for N idle connections and $2 echoes.
total_ir() {
    local conns=$1 count=$2
    local file=$OUT/tcp-conns-c$conns-p$PAYLOAD-n$count.out
    timeout 1800 valgrind --tool=callgrind --callgrind-out-file="$file" \
        --collect-atstart=no --toggle-collect='*measured_echoes*' \
        "$BIN" --only-echo --conns "$conns" --echoes "$count" --warmup "$WARMUP" \
        --payload "$PAYLOAD" --window "$WINDOW" >"$file.stdout" 2>"$file.log"
    awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

declare -A PER
for conns in "$LOW" "$HIGH"; do
    base=$(total_ir "$conns" 0)
    full=$(total_ir "$conns" "$K")
    PER[$conns]=$(( (full - base) / K ))
    echo "callgrind_tcp conns=$conns payload=$PAYLOAD window=$WINDOW k=$K ir_total=$full ir_baseline=$base instr_per_packet=${PER[$conns]}"
done
# Goal (issue #6): <= 1.2.
awk -v a="${PER[$LOW]}" -v b="${PER[$HIGH]}" -v lo="$LOW" -v hi="$HIGH" \
    'BEGIN { r = b / a; printf "callgrind_tcp_ratio conns_low=%d conns_high=%d ratio=%.3f goal=1.2 goal_met=%s\n", lo, hi, r, (r <= 1.2 ? "yes" : "no") }'
echo "# profiles: $OUT (callgrind_annotate --inclusive=yes $OUT/tcp-conns-c$HIGH-p$PAYLOAD-n$K.out)"
