#!/bin/bash
# Runs packetdrill scripts against cnet (issue #14): builds packetdrill from the patched tarball
# and libcnet_packetdrill.so, then runs each script in its own network namespace (with a tun0,
# which defaults.sh needs), two at a time, in virtual time.
#
#   scripts/packetdrill.sh [SCRIPTS or DIRS...]     (default: the upstream gtests/net/tcp set)
#
# Environment:
#   PACKETDRILL_SRC   directory holding packetdrill-*-so.tar.gz (default ../shared/tools/packetdrill
#                     beside the clone, else /work/shared/tools/packetdrill)
#   PACKETDRILL_ARGS  extra packetdrill options (-D defines, --local_ip/--remote_ip,
#                     --tolerance_usecs); the library follows the addresses given
#   PACKETDRILL_JOBS  parallel scripts (default 2)
#   PACKETDRILL_SKIP  skip list (default tests/packetdrill/skip.txt; "none" for none)
#   PACKETDRILL_OUT   where to put the per-script logs and results (default target/packetdrill)
# Prints PASS/FAIL/SKIP per script and a summary line "packetdrill: P passed, F failed, S skipped
# of N"; exits 0 when it could run (pass/fail counts are the ratchet's business, see
# tests/packetdrill/tests/scripts.rs), 2 when packetdrill cannot be built.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PACKETDRILL_SRC:-}" ]; then
    if [ -d "$ROOT/../shared/tools/packetdrill" ]; then
        PACKETDRILL_SRC="$ROOT/../shared/tools/packetdrill"
    else
        PACKETDRILL_SRC=/work/shared/tools/packetdrill
    fi
fi
OUT=${PACKETDRILL_OUT:-$ROOT/target/packetdrill}
JOBS=${PACKETDRILL_JOBS:-2}
SKIP=${PACKETDRILL_SKIP:-$ROOT/tests/packetdrill/skip.txt}
TARBALL=$(ls "$PACKETDRILL_SRC"/packetdrill-*.tar.gz 2>/dev/null | head -1)
if [ -z "$TARBALL" ]; then
    echo "packetdrill.sh: no packetdrill tarball in $PACKETDRILL_SRC" >&2
    exit 2
fi
for t in bison flex gcc make unshare ip; do
    if ! command -v $t >/dev/null 2>&1; then
        echo "packetdrill.sh: $t missing (scripts/install-deps.sh installs it)" >&2
        exit 2
    fi
done

# Build packetdrill (into $OUT/build, never into the read-only source directory).
BUILD=$OUT/build
PD=$BUILD/packetdrill/gtests/net/packetdrill/packetdrill
STAMP=$BUILD/.tarball
if [ ! -x "$PD" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$TARBALL" ]; then
    rm -rf "$BUILD" && mkdir -p "$BUILD"
    tar -xzf "$TARBALL" -C "$BUILD" || exit 2
    if ! (cd "$BUILD/packetdrill/gtests/net/packetdrill" && ./configure >/dev/null 2>&1 &&
        make -j2 packetdrill >"$BUILD/make.log" 2>&1); then
        echo "packetdrill.sh: packetdrill build failed, see $BUILD/make.log" >&2
        exit 2
    fi
    echo "$TARBALL" >"$STAMP"
fi
TCPDIR=$BUILD/packetdrill/gtests/net/tcp

# Build the library (cargo's target dir; CARGO_TARGET_DIR honoured).
if [ -z "${PACKETDRILL_LIB:-}" ]; then
    (cd "$ROOT" && cargo build -q -p cnet-packetdrill) || exit 2
    PACKETDRILL_LIB=${CARGO_TARGET_DIR:-$ROOT/target}/debug/libcnet_packetdrill.so
fi
PACKETDRILL_LIB=$(cd "$(dirname "$PACKETDRILL_LIB")" && pwd)/$(basename "$PACKETDRILL_LIB")

# Scripts: arguments (files or directories) or the upstream IPv4 set.
list=()
if [ $# -eq 0 ]; then
    set -- "$TCPDIR"
fi
for a in "$@"; do
    if [ -d "$a" ]; then
        while IFS= read -r f; do list+=("$f"); done < <(find "$a" -name '*.pkt' | sort)
    else
        list+=("$a")
    fi
done

# Addresses: packetdrill's --local_ip/--remote_ip from PACKETDRILL_ARGS, else fixed ones.
ARGS=${PACKETDRILL_ARGS:-}
LOCAL=$(echo " $ARGS" | sed -n 's/.*--local_ip[= ]\([0-9.]*\).*/\1/p')
REMOTE=$(echo " $ARGS" | sed -n 's/.*--remote_ip[= ]\([0-9.]*\).*/\1/p')
LOCAL=${LOCAL:-192.168.0.1}
REMOTE=${REMOTE:-192.0.2.1}
case " $ARGS" in *--tolerance_usecs*) ;; *) ARGS="$ARGS --tolerance_usecs=14000" ;; esac
case " $ARGS" in *--local_ip*) ;; *) ARGS="$ARGS --local_ip=$LOCAL" ;; esac
case " $ARGS" in *--remote_ip*) ;; *) ARGS="$ARGS --remote_ip=$REMOTE" ;; esac

mkdir -p "$OUT/logs"
RESULTS=$OUT/results.txt
: >"$RESULTS"

# Name of a script relative to the tcp dir (or as given).
rel() { case "$1" in "$TCPDIR"/*) echo "${1#"$TCPDIR"/}" ;; *) echo "$1" ;; esac; }

run_one() {
    local f=$1 name log reason
    name=$(rel "$f")
    if [ -f "$SKIP" ] && reason=$(awk -v n="$name" '!/^#/ && NF && !found && ($1 == n || ($1 ~ /\/$/ && index(n, $1) == 1)) { $1 = ""; sub(/^ +/, ""); print; found = 1 } END { exit !found }' "$SKIP"); then
        echo "SKIP $name ($reason)"
        return
    fi
    log=$OUT/logs/$(echo "$name" | tr '/' '_').log
    # Its own network namespace with a tun0; its own directory (for ./defaults.sh); bash as sh.
    if (cd "$(dirname "$f")" && timeout 60 unshare -n bash -c '
            ip link set lo up; ip tuntap add dev tun0 mode tun; ip link set tun0 up
            exec "$@"' _ "$PD" --so_filename="$PACKETDRILL_LIB" \
            --so_flags="local=$LOCAL,remote=$REMOTE" --ip_version=ipv4 $ARGS \
            "$(basename "$f")") >"$log" 2>&1; then
        echo "PASS $name"
    else
        echo "FAIL $name"
    fi
}
export -f run_one rel
export PD PACKETDRILL_LIB LOCAL REMOTE ARGS OUT SKIP TCPDIR

printf '%s\n' "${list[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$1"' _ {} | tee "$RESULTS"
p=$(grep -c '^PASS' "$RESULTS"); f=$(grep -c '^FAIL' "$RESULTS"); s=$(grep -c '^SKIP' "$RESULTS")
echo "packetdrill: $p passed, $f failed, $s skipped of $((p + f + s))"
