"""What a queue's workers may touch: file roots, reachable hosts, download limits, and which
of a job's annotations travel to its pod. Also the environment through which the operator
hands these settings to a worker (the worker imports this module, never the controller).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, StringConstraints

from videoqueue.api.common import ApiModel, CelRule, cel_rules

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

# One DNS label: letters, digits, '_' (SRV-style names) and inner '-', at most 63 characters.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME_PATTERN: Final = rf"^{_LABEL}(\.{_LABEL})*\.?$"
"""A host name as the worker matches it (ASCII; write internationalized names as xn--...)."""

FILE_ROOT_IS_CLEAN = CelRule(
    rule=r"!self.matches(r'(^|/)\.\.(/|$)')",
    message=(
        "spec.worker.fileRoots entries must be absolute directories without '..' segments, "
        "e.g. /media; write the directory the segments lead to"
    ),
    message_expression=(
        "'spec.worker.fileRoots entries must be absolute directories without \\'..\\' "
        "segments, e.g. /media; write the directory the segments lead to, not \"' + self + '\"'"
    ),
)
ALLOWED_HOST_FORM = CelRule(
    rule=(
        f"self.matches(r'{HOST_NAME_PATTERN}') || "
        f"(self.startsWith('*.') && self.substring(2).matches(r'{HOST_NAME_PATTERN}')) || "
        "isIP(self) || isCIDR(self) || "
        "(self.startsWith('[') && self.endsWith(']') && "
        "isIP(self.substring(1, size(self) - 1)))"
    ),
    message=(
        "spec.worker.allowedHosts entries must each be a host name (media.internal), a "
        "*.domain wildcard (*.svc.cluster.local), an IP address (10.0.0.7, fd00::7) or a CIDR "
        "(10.20.0.0/16)"
    ),
    message_expression=(
        "'spec.worker.allowedHosts entries must each be a host name (media.internal), a "
        "*.domain wildcard (*.svc.cluster.local), an IP address (10.0.0.7, fd00::7) or a CIDR "
        "(10.20.0.0/16), not \"' + self + '\"'"
    ),
)
# An annotation key: an optional DNS subdomain prefix and '/', then a name of at most 63
# characters; or the start of one ended with '*' (`example.com/*`, `example.com/team-*`).
_KEY_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
ANNOTATION_KEY_PATTERN: Final = rf"^({_KEY_PREFIX})?{_KEY_NAME}$"
ANNOTATION_PREFIX_PATTERN: Final = r"^[a-z0-9.-]*(/[-A-Za-z0-9_.]*)?\*$"
COPY_ANNOTATION_FORM = CelRule(
    rule=(
        f"self.matches(r'{ANNOTATION_KEY_PATTERN}') || self.matches(r'{ANNOTATION_PREFIX_PATTERN}')"
    ),
    message=(
        "spec.worker.copyAnnotations entries must each be an annotation key "
        "(example.com/trace-id: an optional DNS prefix and '/', then at most 63 letters, "
        "digits, '-', '_' or '.') or a prefix of one ending in '*' (example.com/*)"
    ),
    message_expression=(
        "'spec.worker.copyAnnotations entries must each be an annotation key "
        "(example.com/trace-id: an optional DNS prefix and \\'/\\', then at most 63 letters, "
        "digits, \\'-\\', \\'_\\' or \\'.\\') or a prefix of one ending in \\'*\\' "
        "(example.com/*), not \"' + self + '\"'"
    ),
)

FileRoot = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024, pattern=r"^/"),
    Field(json_schema_extra=cel_rules(FILE_ROOT_IS_CLEAN)),
]
AllowedHost = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_*.:/\[\]-]+$"),
    Field(json_schema_extra=cel_rules(ALLOWED_HOST_FORM)),
]
AnnotationKeyPattern = Annotated[
    str,
    StringConstraints(min_length=1, max_length=317, pattern=r"^[A-Za-z0-9*./_-]+$"),
    Field(json_schema_extra=cel_rules(COPY_ANNOTATION_FORM)),
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
