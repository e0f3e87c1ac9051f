# The videoqueue operator: `python -m videoqueue` and its locked dependencies, nothing else.
#
# Build with hack/docker-build-operator.sh, which stages dist/operator-image/site-packages
# (the videoqueue package and the runtime dependencies at the versions uv.lock pins, compiled
# ahead) and builds this file with the repository as context (.dockerignore lets only that
# directory in). The base is any image with Python 3.11 at /usr/bin/python3; by default the
# script uses the locally debootstrapped Debian base of the worker image
# (hack/worker-base-image.sh), so nothing is pulled. No RUN steps: the build needs no network.
#
# Runs as a non-root user (uid 65532) with a read-only root filesystem: it writes nothing but
# temporary files under /tmp (mount an emptyDir there; the Helm chart does).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

COPY dist/operator-image/site-packages/ /opt/videoqueue/lib/

# USER: kopf names a replica user@host when $POD_ID is unset, and the uid (65532, or any
# uid a cluster assigns) has no passwd entry to look the name up in.
ENV PYTHONPATH=/opt/videoqueue/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    USER=videoqueue

USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["/usr/bin/python3", "-m", "videoqueue"]
