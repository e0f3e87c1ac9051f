"""What a queue's workers may touch: file roots, reachable hosts, download limits, and which
of a job's annotations travel to its pod. Also the environment through which the operator
hands these settings to a worker (the worker imports this module, never the controller).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, StringConstraints

from videoqueue.api.common import ApiModel

ENV_FILE_ROOTS: Final = "VIDEOQUEUE_FILE_ROOTS"
"""JSON list of absolute directories; file:// inputs and outputs must resolve inside one."""
ENV_ALLOWED_HOSTS: Final = "VIDEOQUEUE_ALLOWED_HOSTS"
"""JSON list of hosts, `*.domain` wildcards, IP addresses or CIDRs that a worker may reach
although they resolve to a loopback, link-local, private or otherwise internal address."""
ENV_DOWNLOAD_TIMEOUT_SECONDS: Final = "VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS"
"""Most seconds a whole download (or upload) may take."""

EXIT_INVALID_JOB: Final = 2
"""The worker's exit code for a job that is wrong (params, URLs, payload): a retry would fail
the same way, so the operator fails the job at once with the worker's termination message."""

DEFAULT_FILE_ROOTS: Final = ("/media",)
DEFAULT_DOWNLOAD_TIMEOUT_SECONDS: Final = 3600
MAX_FILE_ROOTS: Final = 16
MAX_ALLOWED_HOSTS: Final = 64
MAX_COPIED_ANNOTATIONS: Final = 32
OWN_ANNOTATION_DOMAIN: Final = "videoqueue.dev"
"""Job annotations in this domain (and its subdomains) always travel to the worker pod."""

FileRoot = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^/")]
AllowedHost = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9*.:/\[\]-]+$")
]
AnnotationKeyPattern = Annotated[
    str, StringConstraints(min_length=1, max_length=317, pattern=r"^[A-Za-z0-9*./_-]+$")
]


class WorkerSettings(ApiModel):
    """The sandbox of the queue's workers, and what of a job reaches its pod."""

    file_roots: list[FileRoot] = Field(
        default_factory=lambda: list(DEFAULT_FILE_ROOTS), max_length=MAX_FILE_ROOTS
    )
    """Directories that file:// inputs and outputs must be inside once `..`, `%2e%2e` and
    symlinks are resolved; mount them into the template. Default: /media."""
    allowed_hosts: list[AllowedHost] = Field(default_factory=list, max_length=MAX_ALLOWED_HOSTS)
    """Hosts (`media.internal`), domain wildcards (`*.svc.cluster.local`), IP addresses or
    CIDRs (`10.20.0.0/16`) that workers may fetch from and upload to although they resolve
    to loopback, link-local (cloud metadata), private or other internal addresses. Public
    addresses are always reachable. Default: none."""
    download_timeout_seconds: int = Field(default=DEFAULT_DOWNLOAD_TIMEOUT_SECONDS, ge=1, le=86_400)
    """Most seconds one download or upload may take as a whole."""
    copy_annotations: list[AnnotationKeyPattern] = Field(
        default_factory=list, max_length=MAX_COPIED_ANNOTATIONS
    )
    """Job annotations copied to its worker pods: exact keys, or prefixes ending in `*`
    (`example.com/*`). Annotations in the videoqueue.dev domain and its subdomains are always
    copied; nothing else is by default, so a job cannot trigger other controllers (sidecar or
    secret injectors) on its pod. The template's own annotations are always kept."""
