#!/usr/bin/env bash
# Local demo of the pre-flight check: what audience-sync would send to TikTok for an Amplitude export.
# Usage: scripts/demo.sh path/to/audience-sync
set -euo pipefail
bin=${1:?path to the audience-sync binary}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" <<'PY'
import gzip, random, sys
random.seed(7)
work = sys.argv[1]
def export(path, users, gz=False):
    rows = ["\ufeffAmplitude ID,User ID,Email"]
    for i, u in enumerate(users):
        rows.append(f'{100000+i},u{i},"{u}"')
    # the usual dirt
    rows += ["9001,x1,", "9002,x2,   ", "9003,x3,not-an-email", "9004,x4,d41d8cd98f00b204e9800998ecf8427e",
             "9005,x5", '9006,x6,"JANE.DOE+promo@Example.com"', "9007,x7,86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"]
    data = ("\r\n".join(rows) + "\r\n").encode()
    open(path, "wb").write(gzip.compress(data) if gz else data)
first = [f"user{i}@example.com" for i in range(5000)] + [f"User{i}@Example.com" for i in range(0, 300)]
export(f"{work}/c7xk2pq_2026-11-25T10:00_existing_demo.csv", first)
churned = [f"user{i}@example.com" for i in range(250, 5400)]
export(f"{work}/c7xk2pq_2026-11-26T10:00_existing_demo.csv.gz", churned, gz=True)
PY

first="$work/c7xk2pq_2026-11-25T10:00_existing_demo.csv"
second="$work/c7xk2pq_2026-11-26T10:00_existing_demo.csv.gz"
echo "== 1. Pre-flight check of Amplitude's export $(basename "$first")"
"$bin" preview "$first" --key email --column email --write-snapshot "$work/snapshot.bin"
echo
echo "== 2. The next day's export (gzip) against the snapshot of the first: only the delta would be sent"
"$bin" preview "$second" --key email --column email --previous "$work/snapshot.bin"
echo
echo "== 3. The same as JSON, for scripts"
"$bin" preview "$second" --key email --column email --previous "$work/snapshot.bin" --format json
echo
echo "== 4. Hashing single values the way TikTok expects them"
printf '  Jane.Doe+ads@Example.com \n(415) 555-2671\n' | tee /dev/stderr | "$bin" hash --key email 2>/dev/null
printf '(415) 555-2671\n0044 7911 123456\n' | "$bin" hash --key phone --region US
