#!/bin/sh
# `tape replay --speed max` throughput: a journal of FRAMES frames (default
# 5 M, payloads of 1 to 7 bytes: the lines of `seq`) on /dev/shm, replayed
# RUNS times (default 5) into a fresh replay journal each time. Prints each
# run's line (the frames/s `tape replay` measures from its first frame read
# to its last written) and the whole command's wall time, then the medians.
#
#   cargo build --release --bin tape && sh benches/replay.sh [FRAMES] [RUNS]
set -eu
FRAMES=${1:-5000000}
RUNS=${2:-5}
TAPE=${TAPE:-$(dirname "$0")/../target/release/tape}
ROOT=$(mktemp -d /dev/shm/tape-replay-bench.XXXXXX)
trap 'kill $SVC 2>/dev/null; rm -rf "$ROOT"' EXIT
"$TAPE" service --root "$ROOT" >/dev/null 2>&1 &
SVC=$!
while [ ! -S "$ROOT/system/service.sock" ]; do sleep 0.05; done
seq 1 "$FRAMES" | "$TAPE" write md --root "$ROOT"
"$TAPE" ls --root "$ROOT"
rates=""
walls=""
i=1
while [ "$i" -le "$RUNS" ]; do
    start=$(date +%s.%N)
    line=$("$TAPE" replay md --speed max --into "r$i." --root "$ROOT")
    end=$(date +%s.%N)
    wall=$(echo "$end - $start" | bc)
    echo "run $i: $line; wall $wall s"
    rates="$rates $(echo "$line" | sed -n 's/.*, \([0-9.]*\) M frames\/s.*/\1/p')"
    walls="$walls $wall"
    rm -f "$ROOT/journal/r$i.md."*
    i=$((i + 1))
done
med() { echo "$@" | tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median: $(med $rates) M frames/s in the replay loop; wall $(med $walls) s for $FRAMES frames ($(echo "$FRAMES / $(med $walls) / 1000000" | bc -l | cut -c1-5) M frames/s)"
