#!/usr/bin/env bash
# Builds the kstatus helper (main.go: sigs.k8s.io/cli-utils' kstatus rules as a filter) into
# the toolchain cache, once per version of its sources, and prints the binary's path:
#   $VIDEOQUEUE_CACHE/kstatus-<cli-utils version>-<hash of go.mod, go.sum, main.go>/kstatus
# The tests run it to check videoqueue's conditions with the rules Flux and kpt apply.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${VIDEOQUEUE_CACHE:-$HOME/.cache/videoqueue}
version=$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2; exit}' "$here/go.mod")
digest=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)
dest="$cache/kstatus-$version-$digest"

if [[ ! -x "$dest/kstatus" ]]; then
    # Same settings as hack/build-toolchain.sh: the committed go.sum is the trust anchor
    # (no checksum server is reachable here), two parallel compile jobs, the local Go.
    export GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
    export GOFLAGS="-p=${BUILD_JOBS:-2} -buildvcs=false -trimpath -mod=readonly"
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.kstatus.XXXXXX")
    (cd "$here" && go build -o "$tmp/kstatus" .) >&2
    rm -rf "$dest"
    mv "$tmp" "$dest"
fi
echo "$dest/kstatus"
