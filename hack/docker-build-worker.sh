#!/usr/bin/env bash
# Builds the worker image with the local Docker engine (DOCKER_HOST honoured) and prints its
# tag, `videoqueue-worker:<key>`. Never pulls: the base comes from worker-base-image.sh.
#
# The tag is a hash of the base and the staged build context, so an unchanged worker is not
# rebuilt at all; a changed one costs a few seconds (the Dockerfile only copies files).
#
#   hack/docker-build-worker.sh [TAG]    # TAG, e.g. videoqueue/worker:0.1.0, is added too
#   hack/docker-build-worker.sh --print-tag   # only print the content tag (no Docker): what
#                                             # envtest's image cache is keyed on
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}  # the one that has uv (make venv installs it)
log() { echo "docker-build-worker: $*" >&2; }

print_tag=false
if [[ ${1:-} == --print-tag ]]; then
    print_tag=true
    shift
    base=$("$repo/hack/worker-base-image.sh" --print-tag)
else
    base=$("$repo/hack/worker-base-image.sh")
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$repo/worker-image/Dockerfile" "$context/"

# The worker, the wire contract (videoqueue.api only: the worker never imports the
# controller) and its dependencies at the versions uv.lock pins, installed for the image's
# Python (Debian's 3.11), compiled ahead so a read-only root fs costs no start-up time. All
# but pydantic-core are pure Python; the second line is boto3 (s3:// transfers) and what it
# needs.
case $(dpkg --print-architecture) in
    amd64) platform=x86_64-manylinux_2_28 ;;
    arm64) platform=aarch64-manylinux_2_28 ;;
    *) log "unsupported architecture $(dpkg --print-architecture)"; exit 1 ;;
esac
"$python" - "$repo/uv.lock" pydantic pydantic-core annotated-types typing-extensions \
    typing-inspection redis async-timeout \
    boto3 botocore s3transfer jmespath python-dateutil six urllib3 >"$context/requirements.txt" <<'PY'
import sys, tomllib

with open(sys.argv[1], "rb") as f:
    pins = {p["name"]: p["version"] for p in tomllib.load(f)["package"]}
for name in sys.argv[2:]:
    print(f"{name}=={pins[name]}")
PY
"$python" -m uv pip install --quiet --target "$context/site-packages" --no-deps \
    --python-version 3.11 --python-platform "$platform" -r "$context/requirements.txt"
mkdir -p "$context/site-packages/videoqueue"
cp -r "$repo/worker-image/videoqueue_worker" "$context/site-packages/"
cp -r "$repo/operator/videoqueue/api" "$context/site-packages/videoqueue/"
cp "$repo/operator/videoqueue/__init__.py" "$context/site-packages/videoqueue/"
find "$context/site-packages" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m compileall -q --invalidation-mode unchecked-hash "$context/site-packages" >/dev/null

key=$( (echo "$base"; cd "$context" && find . -type f ! -name '*.pyc' -print0 | sort -z |
    xargs -0 sha256sum) | sha256sum | cut -c1-16)
tag=videoqueue-worker:$key
if $print_tag; then
    echo "$tag"
    exit 0
fi
if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag is present"
else
    log "building $tag on $base"
    DOCKER_BUILDKIT=0 docker build -q --network none --build-arg "BASE_IMAGE=$base" \
        -t "$tag" "$context" >/dev/null
    # Older builds of the worker would pile up in the engine's cache; the base stays.
    docker image ls --format '{{.Repository}}:{{.Tag}}' videoqueue-worker |
        grep -vx "$tag" | xargs -r docker image rm >/dev/null 2>&1 || true
fi
if [[ -n ${1:-} ]]; then
    docker tag "$tag" "$1"
    tag=$1
fi
echo "$tag"
