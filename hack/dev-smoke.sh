#!/usr/bin/env bash
# CI's check of the README's first command: `make dev` (run as root, so with a real node)
# ends with the sample jobs' real output files in .dev/media/out. Prints the time to the
# first and the last file, then stops the operator and the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

outputs=(news-probe.json news.jpg news-480p.mp4 news-audio.opus promo-teaser.mp4 promo-480p.mp4)
rm -rf .dev/media/out
log=$(mktemp)
start=$SECONDS
setsid make dev >"$log" 2>&1 &
dev=$!
stop() {
    kill -TERM -- "-$dev" 2>/dev/null || true
    wait "$dev" 2>/dev/null || true
    make --no-print-directory cluster-down >/dev/null
}
trap stop EXIT

first=""
deadline=$((SECONDS + ${DEV_SMOKE_SECONDS:-600}))  # a cold cache builds the toolchain first: raise it
while true; do
    present=0
    for name in "${outputs[@]}"; do [[ -s .dev/media/out/$name ]] && present=$((present + 1)); done
    if [[ -z $first && $present -gt 0 ]]; then first=$((SECONDS - start)); fi
    if [[ $present -eq ${#outputs[@]} ]]; then break; fi
    if ! kill -0 "$dev" 2>/dev/null || [[ $SECONDS -ge $deadline ]]; then
        echo "make dev: $present of ${#outputs[@]} outputs in .dev/media/out; its log:" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
    sleep 1
done
echo "make dev: first output after ${first}s, all ${#outputs[@]} after $((SECONDS - start))s"
ls -l .dev/media/out
