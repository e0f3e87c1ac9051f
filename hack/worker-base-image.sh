#!/usr/bin/env bash
# Makes the worker image's base locally, never pulling: a minimal Debian root fs built by
# debootstrap from the Debian mirror apt on this machine already uses, imported into the
# local Docker engine as `videoqueue-worker-base:<key>`. Prints that tag on stdout.
#
# The key is a hash of everything that decides the root fs (this script, suite, apt's
# sources, architecture, package list), so a second run finds the tag (or the cached tarball) and
# costs seconds. Needs root (debootstrap) and a running Docker engine (DOCKER_HOST honoured).
#
#   hack/worker-base-image.sh --print-tag   # only print the tag it would make (no Docker)
set -euo pipefail

SUITE=${VIDEOQUEUE_BASE_SUITE:-bookworm}
# What the worker needs at run time, nothing else: ffmpeg/ffprobe and a Python 3.11
# (the worker's pure-Python dependencies are copied in by docker-build-worker.sh).
PACKAGES=(ffmpeg python3 ca-certificates)
CACHE=${VIDEOQUEUE_CACHE:-$HOME/.cache/videoqueue}/worker-base
ARCH=$(dpkg --print-architecture)

log() { echo "worker-base-image: $*" >&2; }

mirror() {
    # The mirror apt uses for a release's main component, e.g. http://deb.debian.org/debian/
    # for bookworm; empty when apt has none.
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null |
        awk -v s="$1" '$2 == s && $3 == "main" { print $1; exit }'
}

# Keyed on apt's source files rather than the mirror resolved from them: asking apt takes
# seconds, and only a cold build needs the answer.
KEY=$( (cat "${BASH_SOURCE[0]}" /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null
    echo "$SUITE ${VIDEOQUEUE_BASE_MIRROR:-} $ARCH ${PACKAGES[*]}") | sha256sum | cut -c1-16)
TAG=videoqueue-worker-base:$KEY
TARBALL=$CACHE/$KEY.tar

if [[ ${1:-} == --print-tag ]]; then
    echo "$TAG"
    exit 0
fi

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG is present"
    echo "$TAG"
    exit 0
fi

if [[ ! -s $TARBALL ]]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing: run make system-packages"; exit 1; }
    [[ $(id -u) -eq 0 ]] || { log "debootstrap needs root"; exit 1; }
    mkdir -p "$CACHE"
    work=$(mktemp -d "$CACHE/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    MIRROR=${VIDEOQUEUE_BASE_MIRROR:-$(mirror "$SUITE")}
    if [[ -z $MIRROR ]]; then
        log "no apt source for '$SUITE main' in /etc/apt/sources.list*; set VIDEOQUEUE_BASE_MIRROR"
        exit 1
    fi
    log "debootstrap $SUITE from $MIRROR into $work/root (a few minutes, once)"
    include=$(IFS=,; echo "${PACKAGES[*]}")
    debootstrap --variant=minbase --arch="$ARCH" --include="$include" \
        "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        exit 1
    }
    # The point release debootstrap installs, plus the updates and security fixes published
    # since, from the same mirrors apt on this machine uses (frozen in the cached tarball:
    # delete it to take newer fixes).
    {
        echo "deb $MIRROR $SUITE main"
        for release in "$SUITE-updates" "$SUITE-security"; do
            uri=$(mirror "$release")
            [[ -z $uri ]] || echo "deb $uri $release main"
        done
    } >"$work/root/etc/apt/sources.list"
    log "upgrading with $(grep -c . "$work/root/etc/apt/sources.list") apt sources"
    { chroot "$work/root" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive chroot "$work/root" apt-get -y -qq upgrade; } \
        >"$work/upgrade.log" 2>&1 || { tail -n 30 "$work/upgrade.log" >&2; exit 1; }
    # Nothing the worker reads at run time: package caches, indexes, docs, man pages.
    rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/cache/apt/*.bin \
        "$work/root"/var/lib/apt/lists/* "$work/root"/var/log/apt/* \
        "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* "$work/root"/usr/share/info/*
    tar --numeric-owner -C "$work/root" -cf "$work/root.tar" .
    mv "$work/root.tar" "$TARBALL"
fi

log "importing $TARBALL as $TAG"
docker import "$TARBALL" "$TAG" >/dev/null
echo "$TAG"
