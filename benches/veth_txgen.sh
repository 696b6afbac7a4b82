#!/usr/bin/env bash
# cnet txgen -> cnet echo over veth, both on AF_XDP, against a raw AF_XDP reflector on the same veth
# under the same load (drivers/examples/xdp_reflect.rs), in one run (issue #17). Root only.
#
#   benches/veth_txgen.sh [SECS] [SIZE]     (defaults: SECS=5, SIZE=64 UDP payload bytes)
#
# Creates two namespaces with unique names joined by a veth pair (cnvA/cnvB, addresses
# 198.18.0.1/24 and 198.18.0.2/24), starts `cnet echo` in one, runs `cnet txgen` at maximum rate
# for SECS seconds in the other, stops the echo, runs the same txgen against `xdp_reflect` (receive,
# swap headers, transmit: no stack) in its place, deletes the namespaces (also on error or Ctrl-C),
# then runs `xdp_raw_bench --secs SECS` (its own namespaces) for the raw one-way TX/RX limits. Every
# process is bounded in time (timeout). Prints the txgen summaries, the raw rates and the ratios;
# `ratio_reflect` (echo / reflector) is the goal's figure.
set -euo pipefail

SECS=${1:-5}
SIZE=${2:-64}
# WINDOW=N: at most N datagrams in flight (closed loop); 0 (default): open loop at maximum rate.
WINDOW=${WINDOW:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
PROFILE=${PROFILE:-lean}
[ "$(id -u)" = 0 ] || { echo "SKIP veth_txgen: needs root"; exit 0; }
if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build -q --profile "$PROFILE" -p cnet-apps --bin cnet &&
        cargo build -q --profile "$PROFILE" -p cnet-drivers --example xdp_raw_bench --example xdp_reflect) >&2
fi
CNET=$CARGO_TARGET_DIR/$PROFILE/cnet
RAW=$CARGO_TARGET_DIR/$PROFILE/examples/xdp_raw_bench
REFLECT=$CARGO_TARGET_DIR/$PROFILE/examples/xdp_reflect

A=cnet-txg-a-$$
B=cnet-txg-b-$$
ECHO_PID=
cleanup() {
    if [ -n "$ECHO_PID" ]; then kill "$ECHO_PID" 2>/dev/null || true; wait "$ECHO_PID" 2>/dev/null || true; fi
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add cnvA type veth peer name cnvB netns "$B"
for ns_if in "$A cnvA" "$B cnvB"; do
    set -- $ns_if
    ip -n "$1" link set "$2" up
    # veth XDP needs the peer's GRO or an XDP program; checksums are done in software.
    ip netns exec "$1" ethtool -K "$2" tx off rx off >/dev/null 2>&1 || true
done
ip -n "$A" addr add 198.18.0.1/24 dev cnvA
ip -n "$B" addr add 198.18.0.2/24 dev cnvB
MAC_B=$(ip netns exec "$B" cat /sys/class/net/cnvB/address)

# One txgen run against whatever serves 198.18.0.2:7 in $B (started by the caller); prints the
# txgen summary line.
txgen() {
    ip netns exec "$A" timeout $((SECS + 20)) "$CNET" txgen --iface cnvA --src 198.18.0.1/24 \
        --dst 198.18.0.2:7 --dst-mac "$MAC_B" --size "$SIZE" --window "$WINDOW" --duration "$SECS" |
        tee -a /dev/stderr | grep "txgen summary"
}
stop_server() {
    if [ -n "$ECHO_PID" ]; then kill "$ECHO_PID" 2>/dev/null || true; wait "$ECHO_PID" 2>/dev/null || true; fi
    ECHO_PID=
    sleep 0.5 # the kernel releases the AF_XDP socket's UMEM from deferred work
}

# 1. cnet echo (the full stack: ARP, IPv4, UDP, socket, zero-copy echo).
ip netns exec "$B" timeout $((SECS + 20)) "$CNET" echo --iface cnvB --addr 198.18.0.2/24 \
    --no-netlink --tcp 0 --idle spin >/tmp/$B.echo.log 2>&1 &
ECHO_PID=$!
sleep 1
TXG=$(txgen)
stop_server
# 2. The raw reflector on the same veth, same load: receive, swap headers, transmit; no stack.
ip netns exec "$B" timeout $((SECS + 20)) "$REFLECT" --iface cnvB --secs $((SECS + 3)) \
    >/tmp/$B.reflect.log 2>&1 &
ECHO_PID=$!
sleep 1
TXR=$(txgen)
stop_server
cat /tmp/$B.reflect.log >&2
cleanup
# 3. Raw AF_XDP limits of one direction each (own namespaces).
RAWOUT=$(timeout $((4 * SECS + 30)) "$RAW" --secs "$SECS" 2>&1 | tee -a /dev/stderr)
rx_pps=$(echo "$TXG" | sed -n 's/.* rx_pps=\([0-9]*\).*/\1/p')
reflect_pps=$(echo "$TXR" | sed -n 's/.* rx_pps=\([0-9]*\).*/\1/p')
raw_tx=$(echo "$RAWOUT" | sed -n 's/^TX: \([0-9]*\) pps.*/\1/p')
raw_rx=$(echo "$RAWOUT" | sed -n 's/^RX: \([0-9]*\) pps.*/\1/p')
ratio() { awk -v a="$1" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
# echo_rx_pps: echoes back at the generator per second (each one a frame through the echo's RX
# and TX and the generator's TX and RX).
# ratio_reflect is the issue's goal (>= 0.8): the same generator and veth, cnet's echo against the
# least an AF_XDP echo can do.
echo "veth_txgen size=$SIZE secs=$SECS window=$WINDOW echo_rx_pps=$rx_pps reflect_rx_pps=${reflect_pps:-?}" \
    "raw_tx_pps=${raw_tx:-?} raw_rx_pps=${raw_rx:-?} ratio_reflect=$(ratio "$rx_pps" "$reflect_pps")" \
    "ratio_raw_tx=$(ratio "$rx_pps" "$raw_tx") ratio_raw_rx=$(ratio "$rx_pps" "$raw_rx")"
