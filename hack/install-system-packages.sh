#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, skipping those already present.
# Go and Python come with the machine; everything Kubernetes is built by build-toolchain.sh.
set -euo pipefail

packages=(
    ca-certificates
    git
    procps          # pgrep/ps: the CI run checks that no test process survives
    prometheus      # prometheus + promtool: the metrics integration test and alert-rule tests
    ffmpeg          # the worker's tests and benchmark run real ffmpeg/ffprobe
    redis-server    # worker progress tests start a real Redis on loopback
    docker.io       # the worker image test builds and runs the image locally (dockerd)
    debootstrap     # makes the worker image's Debian base root fs (no image pulls)
    containerd      # real nodes: each runs a containerd of its own (CRI plugin, runc)
    containernetworking-plugins  # real nodes: the pod network (bridge + host-local, /usr/lib/cni)
    iproute2        # real nodes: the pod bridge is deleted with `ip link` at stop
    iptables        # real nodes: kube-proxy (iptables mode) and the nodes' FORWARD guard
    gcc             # real nodes: the pause image is Kubernetes' pause.c linked statically
    libc6-dev       #   (its static libc)
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
