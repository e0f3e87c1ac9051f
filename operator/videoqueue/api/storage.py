"""Where a queue's workers read and write s3:// URLs: an S3-compatible endpoint, its region and
addressing style, and the Secret that holds the credentials. Also the environment and mount
through which the operator hands these to a worker (the worker imports this module, never the
controller). The credentials themselves never pass through a job, an env var or a status:
the worker reads them from the Secret's files.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import Field

from videoqueue.api.common import ApiModel, CelRule, cel_rules

__all__ = [
    "AddressingStyle",
    "S3Storage",
    "SecretReference",
    "Storage",
    "is_s3_url",
]

ENV_S3_ENDPOINT: Final = "VIDEOQUEUE_S3_ENDPOINT"
"""The endpoint URL (http(s)://host[:port]); unset: AWS S3 of the region."""
ENV_S3_REGION: Final = "VIDEOQUEUE_S3_REGION"
ENV_S3_ADDRESSING_STYLE: Final = "VIDEOQUEUE_S3_ADDRESSING_STYLE"
"""`path` or `virtual`, botocore's words for the two styles."""
ENV_S3_CREDENTIALS_DIR: Final = "VIDEOQUEUE_S3_CREDENTIALS_DIR"
"""The directory where the Secret's keys are files; set only when the queue has
spec.storage.s3, so its absence tells the worker that s3:// is not configured."""
ENV_S3_MULTIPART_THRESHOLD_BYTES: Final = "VIDEOQUEUE_S3_MULTIPART_THRESHOLD_BYTES"
"""Uploads at least this large go in parts of this size (the worker's default: 64 MiB)."""

S3_CREDENTIALS_MOUNT: Final = "/var/run/secrets/videoqueue.dev/s3"
SECRET_ACCESS_KEY_ID: Final = "accessKeyId"
SECRET_SECRET_ACCESS_KEY: Final = "secretAccessKey"
SECRET_SESSION_TOKEN: Final = "sessionToken"
"""Optional: for temporary credentials."""

DEFAULT_REGION: Final = "us-east-1"
S3_SCHEME: Final = "s3://"

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENDPOINT_PATTERN: Final = r"^(?i:https?)://[^/?#@\s]+/?$"

ENDPOINT_FORM = CelRule(
    rule=f"self.matches(r'{ENDPOINT_PATTERN}')",
    message=(
        "spec.storage.s3.endpoint must be an http(s) URL of a host and optional port without "
        "a path, e.g. https://s3.media.internal or http://seaweedfs.storage:8333; buckets "
        "and keys go in the jobs' s3:// URLs"
    ),
)


def is_s3_url(url: str) -> bool:
    """Whether a job's input or output URL is s3:// (any case of the scheme)."""
    return url[: len(S3_SCHEME)].lower() == S3_SCHEME


class AddressingStyle(StrEnum):
    """How the bucket is put in a request's URL."""

    PATH = "Path"
    """endpoint/bucket/key: what S3-compatible servers (SeaweedFS, MinIO, Ceph) serve
    without wildcard DNS."""
    VIRTUAL = "Virtual"
    """bucket.endpoint/key: what AWS S3 prefers (and needs for buckets made since 2020 in
    some regions)."""

    @property
    def botocore(self) -> str:
        return self.value.lower()


class SecretReference(ApiModel):
    """A Secret in the queue's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN)
    """The Secret's name."""


class S3Storage(ApiModel):
    """An S3-compatible object store for s3://bucket/key inputs and outputs."""

    endpoint: str | None = Field(
        default=None, max_length=2048, json_schema_extra=cel_rules(ENDPOINT_FORM)
    )
    """http(s)://host[:port] of the S3 API, e.g. http://seaweedfs.storage:8333. Unset: AWS
    S3 in `region`. The endpoint is the queue's, so it is reachable even where it resolves
    to an internal address; jobs only choose buckets and keys."""
    region: str = Field(
        default=DEFAULT_REGION, min_length=1, max_length=64, pattern=r"^[a-z0-9][-a-z0-9]*$"
    )
    """The region requests are signed for (S3-compatible servers mostly accept any)."""
    addressing_style: AddressingStyle = AddressingStyle.PATH
    """Path (endpoint/bucket/key, the default) or Virtual (bucket.endpoint/key)."""
    secret_ref: SecretReference
    """A Secret in the queue's namespace with keys `accessKeyId` and `secretAccessKey` (and
    `sessionToken` for temporary credentials). It is mounted read-only into every worker
    pod of the queue; the worker reads the keys as files and never logs them."""


class Storage(ApiModel):
    """Object stores the queue's workers may read from and write to."""

    s3: S3Storage | None = None
    """S3-compatible storage for s3://bucket/key URLs. Without it, jobs with s3:// URLs are
    Rejected (reason StorageNotConfigured)."""
