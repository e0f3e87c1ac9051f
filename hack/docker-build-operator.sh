#!/usr/bin/env bash
# Builds the operator image (the repository's Dockerfile) with the local Docker engine
# (DOCKER_HOST honoured) and prints its tag. Never pulls: the base is BASE_IMAGE if set, else
# the worker's locally made Debian base (hack/worker-base-image.sh).
#
#   hack/docker-build-operator.sh [TAG]    # default tag: videoqueue/operator:<version>
#   hack/docker-build-operator.sh --print-tag   # only print the content tag (no Docker),
#                                               # videoqueue-operator:<key>, that every build
#                                               # also carries: what envtest's cache keys on
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}  # the one that has uv (make venv installs it)
log() { echo "docker-build-operator: $*" >&2; }

version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
print_tag=false
if [[ ${1:-} == --print-tag ]]; then
    print_tag=true
    shift
    base=${BASE_IMAGE:-$("$repo/hack/worker-base-image.sh" --print-tag)}
else
    base=${BASE_IMAGE:-$("$repo/hack/worker-base-image.sh")}
fi
tag=${1:-videoqueue/operator:$version}

case $(dpkg --print-architecture) in
    amd64) platform=x86_64-manylinux_2_28 ;;
    arm64) platform=aarch64-manylinux_2_28 ;;
    *) log "unsupported architecture $(dpkg --print-architecture)"; exit 1 ;;
esac

# The runtime dependencies exactly as uv.lock pins them, installed for the image's Python
# (Debian bookworm's 3.11), and the videoqueue package without the test-only envtest.
stage=$repo/dist/operator-image
rm -rf "$stage"
mkdir -p "$stage/site-packages"
(cd "$repo" && "$python" -m uv export --frozen --no-dev --no-hashes --no-emit-project \
    --quiet >"$stage/requirements.txt")
"$python" -m uv pip install --quiet --target "$stage/site-packages" --no-deps \
    --python-version 3.11 --python-platform "$platform" -r "$stage/requirements.txt"
cp -r "$repo/operator/videoqueue" "$stage/site-packages/"
rm -rf "$stage/site-packages/videoqueue/envtest"
find "$stage/site-packages" -name __pycache__ -prune -exec rm -rf {} +

key=$( (echo "$base"; cat "$repo/Dockerfile" "$repo/.dockerignore"
    cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-16)
content_tag=videoqueue-operator:$key
if $print_tag; then
    echo "$content_tag"
    exit 0
fi
# Compiled ahead: a read-only root filesystem cannot cache bytecode at start-up.
"$python" -m compileall -q --invalidation-mode unchecked-hash "$stage/site-packages" >/dev/null
if docker image inspect "$content_tag" >/dev/null 2>&1; then
    log "$content_tag is present"
else
    log "building $content_tag on $base"
    DOCKER_BUILDKIT=0 docker build -q --network none --build-arg "BASE_IMAGE=$base" \
        -f "$repo/Dockerfile" -t "$content_tag" "$repo" >/dev/null
    # Older builds would pile up in the engine's cache; the base stays.
    docker image ls --format '{{.Repository}}:{{.Tag}}' videoqueue-operator |
        grep -vx "$content_tag" | xargs -r docker image rm >/dev/null 2>&1 || true
fi
docker tag "$content_tag" "$tag"
echo "$tag"
