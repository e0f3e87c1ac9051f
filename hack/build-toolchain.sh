#!/usr/bin/env bash
# Builds the local control plane from published Go modules and caches the binaries
# outside the repository, one directory per component and version:
#   $VIDEOQUEUE_CACHE/<component>-<version>/<binary>
# A component is rebuilt only when its pinned version changes. Pins live in
# hack/toolchain/versions.env (kwok, helm) and in the wrapper modules' go.mod files
# (kubernetes, etcd, kueue, seaweedfs), whose go.sum files make the download reproducible.
#
# The kubelet, kube-proxy and the pause image (pause.tar) are for envtest's real nodes;
# Kueue (kueue, kueue-crds/) is the scale benchmark's peer (benchmarks/scale); SeaweedFS's
# weed binary is the S3 server of the s3:// storage tests (envtest/s3_server.py).
#
# Usage: hack/build-toolchain.sh            build what is missing, print the bin dir
#        hack/build-toolchain.sh --s3       also SeaweedFS (the test suites)
#        hack/build-toolchain.sh --peers    also SeaweedFS and Kueue (the scale benchmark)
#        hack/build-toolchain.sh --only kueue   only that component (.ci/run builds Kueue in
#                                           the background while the tests run)
#        hack/build-toolchain.sh --print    only print the bin dir (fails if not built)
# Concurrent runs are safe: each component is built under its own lock, and a run that finds
# another building it waits for that build instead of starting its own.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
toolchain="$repo/hack/toolchain"
# shellcheck source=toolchain/versions.env
source "$toolchain/versions.env"

cache=${VIDEOQUEUE_CACHE:-$HOME/.cache/videoqueue}
bin="$cache/bin"
mkdir -p "$cache" "$bin"

# Two cores and no checksum server reachable from here: bound parallelism, and trust
# the committed go.sum files instead of sum.golang.org.
export GOFLAGS="-p=${BUILD_JOBS:-2} -buildvcs=false -trimpath"
export GOSUMDB=off
export GOTOOLCHAIN=local
export CGO_ENABLED=0

module_version() { # <wrapper dir> <module path>
    awk -v m="$2" '$1 == "require" {$1 = ""; $0 = $0} $1 == m && $2 ~ /^v/ {print $2; exit}' "$1/go.mod"
}

KUBERNETES_VERSION=$(module_version "$toolchain/kubernetes" k8s.io/kubernetes)
ETCD_VERSION=$(module_version "$toolchain/etcd" go.etcd.io/etcd/server/v3)
KUEUE_VERSION=$(module_version "$toolchain/kueue" sigs.k8s.io/kueue)
SEAWEEDFS_VERSION=$(module_version "$toolchain/seaweedfs" github.com/seaweedfs/seaweedfs)

log() { printf '[toolchain %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# build_component <name-version> <binaries...> -- <build command...>
# Runs the build into a temporary directory and renames it into place, so an
# interrupted build never leaves a half-filled cache entry that looks complete.
build_component() {
    local key=$1; shift
    local bins=()
    while [[ $1 != -- ]]; do bins+=("$1"); shift; done
    shift
    local dest="$cache/$key" lock
    exec {lock}>"$cache/.$key.lock"
    flock "$lock"
    if [[ -f "$dest/.complete" ]]; then
        log "$key: cached"
    else
        log "$key: building ${bins[*]} (cold builds take several minutes)"
        local tmp start=$SECONDS
        tmp=$(mktemp -d "$cache/.$key.XXXXXX")
        OUT="$tmp" "$@"
        touch "$tmp/.complete"
        rm -rf "$dest"
        mv "$tmp" "$dest"
        log "$key: built in $((SECONDS - start))s"
    fi
    local b
    for b in "${bins[@]}"; do ln -sfn "$dest/$b" "$bin/$b"; done
    exec {lock}>&-
}

# origin <module@version>: prints "<commit> <time>" of the tag, from the proxy's .info file,
# so the binaries report what they were built from.
origin() {
    local info
    info=$(go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Info"])')
    python3 -c 'import json,sys; i=json.load(open(sys.argv[1])); print(i.get("Origin",{}).get("Hash","unknown"), i["Time"])' "$info"
}

# kubernetes_ldflags: the version stamps kubeadm's release builds carry, so the binaries
# (and the node's kubeletVersion) report the pinned tag.
kubernetes_ldflags() {
    local commit date
    read -r commit date < <(origin "k8s.io/kubernetes@$KUBERNETES_VERSION")
    local pkg=k8s.io/component-base/version client=k8s.io/client-go/pkg/version
    local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
    local ldflags="-s -w"
    local p
    for p in $pkg $client; do
        ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ldflags+=" -X $p.gitCommit=$commit -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    echo "$ldflags"
}

build_kubernetes() {
    cd "$toolchain/kubernetes"
    local ldflags c
    ldflags=$(kubernetes_ldflags)
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        log "  go build $c"
        go build -ldflags "$ldflags" -o "$OUT/$c" "k8s.io/kubernetes/cmd/$c"
    done
}

# The kubelet of real nodes (envtest's RealNode), from the same wrapper module and pin; a
# component of its own so adding it did not invalidate the control plane's cache entry.
build_kubelet() {
    cd "$toolchain/kubernetes"
    local ldflags
    ldflags=$(kubernetes_ldflags)
    log "  go build kubelet"
    go build -ldflags "$ldflags" -o "$OUT/kubelet" k8s.io/kubernetes/cmd/kubelet
}

# kube-proxy of real nodes: pods reach ClusterIP Services (the API server through the
# `kubernetes` Service, the chart's metrics Service) the way they do on any cluster.
build_kube_proxy() {
    cd "$toolchain/kubernetes"
    local ldflags
    ldflags=$(kubernetes_ldflags)
    log "  go build kube-proxy"
    go build -ldflags "$ldflags" -o "$OUT/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy
}

# The pod sandbox ("pause") image of real nodes, without a registry: Kubernetes' own
# build/pause/linux/pause.c from the pinned k8s.io/kubernetes module, linked statically, in a
# one-layer image archive (docker-archive layout) that `ctr images import` reads. The tag
# is what envtest's containerd config names as its sandbox_image.
build_pause() {
    cd "$toolchain/kubernetes"
    local src
    src=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c
    command -v gcc >/dev/null || { log "gcc is missing: run make system-packages"; exit 1; }
    log "  gcc -static pause.c"
    mkdir -p "$OUT/rootfs"
    gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION-videoqueue" -o "$OUT/rootfs/pause" "$src"
    strip "$OUT/rootfs/pause"
    python3 - "$OUT" "videoqueue.dev/pause:$KUBERNETES_VERSION" <<'PY'
import hashlib, io, json, sys, tarfile
from pathlib import Path

out, tag = Path(sys.argv[1]), sys.argv[2]
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
    binary = out / "rootfs/pause"
    info = tar.gettarinfo(str(binary), arcname="pause")
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    with binary.open("rb") as f:
        tar.addfile(info, f)
diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
config = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    },
    sort_keys=True,
).encode()
config_name = hashlib.sha256(config).hexdigest() + ".json"
manifest = json.dumps(
    [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{diff_id[7:]}/layer.tar"]}]
).encode()
with tarfile.open(out / "pause.tar", mode="w", format=tarfile.PAX_FORMAT) as archive:
    for name, data in (
        (config_name, config),
        (f"{diff_id[7:]}/layer.tar", layer.getvalue()),
        ("manifest.json", manifest),
    ):
        entry = tarfile.TarInfo(name)
        entry.size = len(data)
        archive.addfile(entry, io.BytesIO(data))
PY
    rm -rf "$OUT/rootfs"
}

build_etcd() {
    cd "$toolchain/etcd"
    local commit _
    read -r commit _ < <(origin "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
    log "  go build etcd"
    go build -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${commit:0:9}" -o "$OUT/etcd" .
}

# Kueue's manager, run out of cluster by the scale benchmark, with the CRDs its module ships
# (applied server-side by the benchmark; the module zip is the only source without a registry).
build_kueue() {
    cd "$toolchain/kueue"
    local commit date pkg=sigs.k8s.io/kueue/pkg/version
    read -r commit date < <(origin "sigs.k8s.io/kueue@$KUEUE_VERSION")
    log "  go build kueue"
    go build -ldflags "-s -w -X $pkg.GitVersion=$KUEUE_VERSION -X $pkg.GitCommit=$commit -X $pkg.BuildDate=$date" \
        -o "$OUT/kueue" sigs.k8s.io/kueue/cmd/kueue
    local dir
    dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
    mkdir -p "$OUT/kueue-crds"
    cp "$dir"/config/components/crd/bases/*.yaml "$OUT/kueue-crds/"
    chmod u+w "$OUT"/kueue-crds/*.yaml
}

# SeaweedFS's weed (master, volume, filer and S3 gateway in one binary). Only a pseudo-version
# is served, so the binary is stamped with that pseudo-version's commit.
build_seaweedfs() {
    cd "$toolchain/seaweedfs"
    local commit=${SEAWEEDFS_VERSION##*-}
    log "  go build weed"
    go build -ldflags "-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=$commit" \
        -o "$OUT/weed" github.com/seaweedfs/seaweedfs/weed
}

go_install() { # <package@version> [ldflags]
    log "  go install $1"
    GOBIN="$OUT" go install -ldflags "-s -w ${2:-}" "$1"
}

build_kwok() {
    go_install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

build_helm() {
    local commit _ pkg=helm.sh/helm/v3/internal/version
    read -r commit _ < <(origin "helm.sh/helm/v3@$HELM_VERSION")
    go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
        "-X $pkg.version=$HELM_VERSION -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean"
}

# --s3 / --peers: also the servers only some suites and benchmarks run beside the control
# plane (SeaweedFS for the s3:// tests, Kueue for bench-scale); `make dev` does without them.
s3=0
kueue=0
print_only=0
only=
while (($#)); do
    case $1 in
        --s3) s3=1 ;;
        --peers) s3=1 kueue=1 ;;
        --print) print_only=1 ;;
        --only) only=${2:-}; shift ;;
        *) log "unknown argument $1 (use --s3, --peers, --only kueue, --print)"; exit 2 ;;
    esac
    shift
done

if [[ -n $only ]]; then
    case $only in
        kueue) build_component "kueue-$KUEUE_VERSION" kueue kueue-crds -- build_kueue ;;
        seaweedfs) build_component "seaweedfs-$SEAWEEDFS_VERSION" weed -- build_seaweedfs ;;
        *) log "--only takes kueue or seaweedfs, not $only"; exit 2 ;;
    esac
    exit 0
fi

if ((!print_only)); then
    build_component "etcd-$ETCD_VERSION" etcd -- build_etcd
    build_component "kwok-$KWOK_VERSION" kwok -- build_kwok
    build_component "helm-$HELM_VERSION" helm -- build_helm
    build_component "kubernetes-$KUBERNETES_VERSION" \
        kube-apiserver kube-controller-manager kube-scheduler kubectl -- build_kubernetes
    build_component "kubelet-$KUBERNETES_VERSION" kubelet -- build_kubelet
    build_component "kube-proxy-$KUBERNETES_VERSION" kube-proxy -- build_kube_proxy
    build_component "pause-$KUBERNETES_VERSION" pause.tar -- build_pause
    if ((s3)); then
        build_component "seaweedfs-$SEAWEEDFS_VERSION" weed -- build_seaweedfs
    fi
    if ((kueue)); then
        build_component "kueue-$KUEUE_VERSION" kueue kueue-crds -- build_kueue
    fi
fi

wanted=(etcd kwok helm kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
build_command=hack/build-toolchain.sh
if ((kueue)); then
    wanted+=(kueue weed)
    build_command+=" --peers"
elif ((s3)); then
    wanted+=(weed)
    build_command+=" --s3"
fi
for b in "${wanted[@]}"; do
    [[ -x "$bin/$b" ]] || { log "missing $bin/$b: run $build_command"; exit 1; }
done
if ((kueue)); then
    [[ -d "$bin/kueue-crds" ]] || { log "missing $bin/kueue-crds: run $build_command"; exit 1; }
fi
[[ -f "$bin/pause.tar" ]] || { log "missing $bin/pause.tar: run hack/build-toolchain.sh"; exit 1; }
echo "$bin"
