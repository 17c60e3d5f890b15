#!/usr/bin/env bash
# `audience-sync preview` on issue 15's inputs (3M rows, dirty and clean), per thread count: the median of
# RUNS whole-process runs (wall, CPU = user + sys, peak RSS) and rows/s. Figures: BENCHMARKS.md.
#   scripts/bench_preview.sh [ROWS] [RUNS]     (after cargo build --release -p audience-sync-cli)
set -euo pipefail
ROWS=${1:-3000000}
RUNS=${2:-7}
BIN=${BIN:-target/release/audience-sync}
DIR=${BENCH_DIR:-target/bench-preview}
mkdir -p "$DIR"
for kind in dirty clean; do
  f="$DIR/$kind-$ROWS.csv"
  [ -s "$f" ] || python3 scripts/dirty_export.py "$ROWS" "$f" $([ $kind = clean ] && echo --clean)
done
printf '%-6s %-7s %10s %10s %10s %12s\n' input threads wall_s cpu_s rss_MB rows_per_s
for kind in dirty clean; do
  f="$DIR/$kind-$ROWS.csv"
  cat "$f" > /dev/null # in the page cache, as an S3 stream would be in memory
  for t in 1 2; do
    for _ in $(seq "$RUNS"); do
      /usr/bin/time -f '%e %U %S %M' "$BIN" preview "$f" --key email --column email --threads "$t" \
        --format json 2>&1 >/dev/null | tail -1
    done | python3 -c '
import statistics, sys
k, t, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
wall = statistics.median(r[0] for r in runs)
cpu = statistics.median(r[1] + r[2] for r in runs)
rss = statistics.median(r[3] for r in runs) / 1024
print(f"{k:<6} {t:<7} {wall:>10.2f} {cpu:>10.2f} {rss:>10.0f} {rows / wall:>12.0f}")' "$kind" "$t" "$ROWS"
  done
done
