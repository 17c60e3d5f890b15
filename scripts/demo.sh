#!/usr/bin/env bash
# `make demo`: audience-sync end to end on this machine, without an AWS account or a TikTok app.
# The local stack (moto + the real handlers + the TikTok sandbox) connects a project, saves the mapping,
# creates a sync, uploads two Amplitude-style exports and shows what reached the TikTok audience. Exits 0 only if
# the sandbox's audience ends equal to the cohort.
# Usage: scripts/demo.sh path/to/audience-sync-local   (moto: MOTO_PYTHON or .venv/bin/python runs tests/moto/atomic_moto.py; or AWS_ENDPOINT_URL)
set -euo pipefail
bin=${1:?path to the audience-sync-local binary}
log=$(mktemp "${TMPDIR:-/tmp}/audience-sync-demo.XXXXXX")

# stdout: the ready line, then the story; stderr (the stack's logs, moto's start): the log file.
if "$bin" --demo 2>"$log" | sed -u '1s/^/stack ready: /'; then
    echo
    echo "demo passed (stack logs: $log)"
else
    echo
    echo "demo FAILED; last lines of the stack's log ($log):" >&2
    tail -n 40 "$log" >&2
    exit 1
fi
