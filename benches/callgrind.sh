#!/usr/bin/env bash
# Instructions per echoed packet, cnet (over MemLink and over the plain copying link) and smoltcp,
# measured with callgrind.
#
#   benches/callgrind.sh [N] [PAYLOAD] [SOCKETS]   (defaults: N=100000, PAYLOAD=64, SOCKETS=0)
#
# SOCKETS > 0: the scaling variant, each side with SOCKETS idle UDP sockets (udp_echo --sockets);
# IDLE_FIRST=1 puts smoltcp's idle sockets ahead of its echo socket (--idle-first).
#
# For each stack: one run of N echoes after the warm-up, one run of 0 echoes after the same
# warm-up; (Ir(N) - Ir(0)) / N is the cost of one echoed packet (request and reply, each through
# both stacks and the link), with set-up, warm-up and exit subtracted out. Profiles are kept in
# $OUT (default /work/target-bench/callgrind) for callgrind_annotate.
#
# TCP (per-packet cost with 10 vs 100 000 established connections): benches/callgrind_tcp.sh.
set -euo pipefail

N=${1:-100000}
PAYLOAD=${2:-64}
SOCKETS=${3:-${SOCKETS:-0}}
IDLE_FIRST=${IDLE_FIRST:-0}
EXTRA=(--sockets "$SOCKETS")
SUFFIX=""
if [ "$SOCKETS" != 0 ]; then SUFFIX="-s$SOCKETS"; fi
if [ "$IDLE_FIRST" = 1 ]; then EXTRA+=(--idle-first); SUFFIX="$SUFFIX-first"; fi
WINDOW=${WINDOW:-32}
WARMUP=${WARMUP:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
OUT=${OUT:-$CARGO_TARGET_DIR/callgrind}
BIN=$CARGO_TARGET_DIR/release/udp_echo

command -v valgrind >/dev/null || {
    echo "valgrind not found: apt-get install -y valgrind" >&2
    exit 1
}
(cd "$ROOT" && cargo build --release -p cnet-benches --bin udp_echo >&2)
mkdir -p "$OUT"

# Total instructions (Ir) of one callgrind run of one stack for $1 echoes.
total_ir() {
    local stack=$1 count=$2
    local file=$OUT/$stack-p$PAYLOAD-n$count$SUFFIX.out
    valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" --only "$stack" \
        --payload "$PAYLOAD" --window "$WINDOW" --warmup "$WARMUP" --runs 1 --count "$count" "${EXTRA[@]}" \
        >/dev/null 2>"$file.log"
    # "summary: <Ir>" (older valgrind) or "totals: <Ir>".
    awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

declare -A PER
for stack in cnet cnet-copy smoltcp; do
    base=$(total_ir "$stack" 0)
    full=$(total_ir "$stack" "$N")
    PER[$stack]=$(( (full - base) / N ))
    echo "callgrind stack=$stack payload=$PAYLOAD sockets=$SOCKETS idle_first=$IDLE_FIRST window=$WINDOW n=$N ir_total=$full ir_baseline=$base instr_per_packet=${PER[$stack]}"
done
# > 1 means cnet needs fewer instructions per echoed packet than smoltcp.
awk -v c="${PER[cnet]}" -v k="${PER[cnet-copy]}" -v s="${PER[smoltcp]}" -v p="$PAYLOAD" \
    -v n="$SOCKETS" \
    'BEGIN { printf "callgrind_ratio payload=%d sockets=" n " smoltcp_over_cnet=%.2f smoltcp_over_cnet_same_link=%.2f\n", p, s / c, s / k }'
echo "# profiles: $OUT (callgrind_annotate --inclusive=yes $OUT/cnet-p$PAYLOAD-n$N$SUFFIX.out)"
