"""A queue's object storage (spec.storage) in its worker pods, and the jobs it cannot serve.

Pure: plain dicts and API models in, plain dicts and messages out. The credentials never pass
through here either: the pod names the Secret, and the kubelet mounts it.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from videoqueue.api.job import VideoJobSpec
from videoqueue.api.storage import (
    ENV_S3_ADDRESSING_STYLE,
    ENV_S3_CREDENTIALS_DIR,
    ENV_S3_ENDPOINT,
    ENV_S3_REGION,
    S3_CREDENTIALS_MOUNT,
    S3Storage,
    Storage,
    is_s3_url,
)

S3_CREDENTIALS_VOLUME: Final = "videoqueue-s3-credentials"
REASON_STORAGE_NOT_CONFIGURED: Final = "StorageNotConfigured"


def s3_urls(spec: VideoJobSpec, resolved_input: str | None = None) -> list[str]:
    """The job's fields that name s3:// URLs (spec.input.url or the input resolved from
    spec.input.fromJob, spec.output.url)."""
    fields = []
    if resolved_input is not None and is_s3_url(resolved_input):
        fields.append(f"the output of spec.input.fromJob ({spec.input.from_job})")
    elif is_s3_url(spec.input.url):
        fields.append("spec.input.url")
    if spec.output is not None and is_s3_url(spec.output.url):
        fields.append("spec.output.url")
    return fields


def storage_refusal(
    spec: VideoJobSpec,
    storage: Storage | None,
    queue_name: str,
    *,
    resolved_input: str | None = None,
) -> str | None:
    """Why the queue cannot run this job's s3:// URLs, or None when it can (or has none).
    `resolved_input` is the input taken from spec.input.fromJob (status.resolvedInput)."""
    fields = s3_urls(spec, resolved_input)
    if not fields or (storage is not None and storage.s3 is not None):
        return None
    return (
        f"{' and '.join(fields)} {'is an s3:// URL' if len(fields) == 1 else 'are s3:// URLs'}"
        f", but queue {queue_name} has no spec.storage.s3 (endpoint, region and the Secret "
        "with the credentials); set it on the queue (docs/storage.md), or use another queue "
        "or an http(s) URL, and recreate the job"
    )


def s3_env(s3: S3Storage) -> list[dict[str, str]]:
    """The queue's spec.storage.s3 as the worker reads it (`videoqueue.api.storage`)."""
    env = [
        {"name": ENV_S3_REGION, "value": s3.region},
        {"name": ENV_S3_ADDRESSING_STYLE, "value": s3.addressing_style.botocore},
        {"name": ENV_S3_CREDENTIALS_DIR, "value": S3_CREDENTIALS_MOUNT},
    ]
    if s3.endpoint is not None:
        env.insert(0, {"name": ENV_S3_ENDPOINT, "value": s3.endpoint.rstrip("/")})
    return env


def mount_s3_credentials(spec: dict[str, Any], worker: dict[str, Any], s3: S3Storage) -> None:
    """Add the credentials Secret as a read-only volume of the pod `spec`, mounted into the
    `worker` container only (sidecars of the template never see it). A template volume or
    mount of the same name or path is replaced: the queue's storage decides what is there."""
    volume = {
        "name": S3_CREDENTIALS_VOLUME,
        # Not optional: without the Secret the pod waits in ContainerCreating with an Event
        # naming it, rather than running a worker that cannot authenticate.
        "secret": {"secretName": s3.secret_ref.name, "optional": False},
    }
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") != S3_CREDENTIALS_VOLUME]
    spec["volumes"] = [*volumes, volume]
    mount = {"name": S3_CREDENTIALS_VOLUME, "mountPath": S3_CREDENTIALS_MOUNT, "readOnly": True}
    mounts = [
        m
        for m in worker.get("volumeMounts") or []
        if m.get("name") != S3_CREDENTIALS_VOLUME and m.get("mountPath") != S3_CREDENTIALS_MOUNT
    ]
    worker["volumeMounts"] = [*mounts, copy.deepcopy(mount)]
