"""s3://bucket/key inputs and outputs, with boto3 (botocore signs and retries, s3transfer moves
the bytes: ranged parallel downloads, multipart uploads above a threshold).

Settings come from the queue's spec.storage.s3, which the operator hands over as environment
(`videoqueue.api.storage`): endpoint, region, addressing style, and the directory where the
queue's Secret is mounted. The credentials are read from those files for each transfer and
handed to botocore directly: never from the job, never into an env var, a log line or an
error message. botocore's own search for credentials (env vars, ~/.aws, instance metadata)
is never reached, since explicit keys come first.

The endpoint is the queue's own setting, like spec.worker.allowedHosts, so it is reached
even where it resolves to an internal address; a job chooses only the bucket and key, which
never change the host (Path style) or only put a checked bucket name in front of the
endpoint's host (Virtual style).

Errors name the bucket and key and what to do: a missing bucket is a mistake in the job
(`invalid`, not retried), a missing key or refused credentials fail the attempt (retried by
the queue's rules: the producer of an input or the Secret may be fixed meanwhile). Transient
failures (throttling, 5xx, dropped connections) are retried inside the attempt by botocore
(standard mode) and, for downloads, by s3transfer.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from videoqueue.api.storage import (
    DEFAULT_REGION,
    ENV_S3_ADDRESSING_STYLE,
    ENV_S3_CREDENTIALS_DIR,
    ENV_S3_ENDPOINT,
    ENV_S3_MULTIPART_THRESHOLD_BYTES,
    ENV_S3_REGION,
    SECRET_ACCESS_KEY_ID,
    SECRET_SECRET_ACCESS_KEY,
    SECRET_SESSION_TOKEN,
)
from videoqueue_worker.errors import WorkerError, invalid

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from s3transfer.futures import TransferFuture
    from s3transfer.manager import TransferManager

Progress = Callable[[int, int | None], None]

MIB: Final = 1 << 20
DEFAULT_MULTIPART_THRESHOLD: Final = 64 * MIB
MIN_PART_BYTES: Final = 5 * MIB
"""S3's smallest part (all but the last)."""
MAX_PARTS: Final = 10_000
MAX_CONCURRENCY: Final = 4
"""Parallel part requests per transfer: enough to fill a link, few enough for a worker pod."""
MAX_ATTEMPTS: Final = 5
"""Tries of one request (botocore standard retries: throttling, 5xx, connection errors)."""
SOCKET_TIMEOUT_SECONDS: Final = 60.0
SECRET_FIELD: Final = "spec.storage.s3.secretRef"
STYLES: Final = ("path", "virtual")

# S3's bucket naming rules (3-63 lower-case letters, digits, '.', '-'; not an IP address).
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_LIKE: Final = re.compile(r"\d+\.\d+\.\d+\.\d+")
MAX_KEY_BYTES: Final = 1024


@dataclass(frozen=True)
class S3Settings:
    """The queue's spec.storage.s3 as the worker got it."""

    region: str
    addressing_style: Literal["path", "virtual"]
    credentials_dir: Path
    endpoint: str | None = None
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings | None:
        """None when the queue has no spec.storage.s3 (no credentials dir is set)."""
        directory = env.get(ENV_S3_CREDENTIALS_DIR)
        if not directory:
            return None
        style = (env.get(ENV_S3_ADDRESSING_STYLE) or "path").lower()
        if style not in STYLES:
            raise invalid(ENV_S3_ADDRESSING_STYLE, f"must be path or virtual, got {style!r}")
        endpoint = env.get(ENV_S3_ENDPOINT) or None
        if endpoint is not None and not endpoint.lower().startswith(("http://", "https://")):
            raise invalid(ENV_S3_ENDPOINT, f"must be an http(s):// URL, got {endpoint!r}")
        raw = env.get(ENV_S3_MULTIPART_THRESHOLD_BYTES)
        threshold = DEFAULT_MULTIPART_THRESHOLD
        if raw:
            if not raw.isdigit() or int(raw) < MIN_PART_BYTES:
                raise invalid(
                    ENV_S3_MULTIPART_THRESHOLD_BYTES,
                    f"must be a whole number of bytes of at least {MIN_PART_BYTES} (S3's "
                    f"smallest part), got {raw!r}",
                )
            threshold = int(raw)
        return cls(
            region=env.get(ENV_S3_REGION) or DEFAULT_REGION,
            addressing_style=cast(Literal["path", "virtual"], style),
            credentials_dir=Path(directory),
            endpoint=endpoint,
            multipart_threshold=threshold,
        )


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_url(url: str, *, field: str, directory_ok: bool) -> S3Object:
    """s3://bucket/key, checked for form. The key is taken as written (as the AWS CLI does:
    not percent-decoded). A key ending in '/' (a prefix) only where `directory_ok`."""
    rest = url[len("s3://") :]
    bucket, slash, key = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or _IP_LIKE.fullmatch(bucket) or ".." in bucket:
        raise invalid(
            field,
            f"{bucket!r} is not an S3 bucket name (3 to 63 lower-case letters, digits, '.' or "
            "'-', starting and ending with a letter or digit); write s3://bucket/key",
        )
    if not slash or not key or (key.endswith("/") and not directory_ok):
        raise invalid(field, f"s3://{bucket}/ needs a key after the bucket: s3://{bucket}/in.mp4")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise invalid(field, f"the key is longer than S3's {MAX_KEY_BYTES} bytes")
    return S3Object(bucket, key)


def _secret(directory: Path, key: str, *, required: bool) -> str | None:
    try:
        value = (directory / key).read_text().strip()
    except FileNotFoundError:
        value = ""
    except OSError as exc:
        raise WorkerError(
            f"cannot read key {key} of the queue's S3 Secret: {exc.strerror}", field=SECRET_FIELD
        ) from None
    if not value and required:
        raise invalid(
            SECRET_FIELD,
            f"the queue's S3 Secret has no key {key} (or it is empty); it needs "
            f"{SECRET_ACCESS_KEY_ID} and {SECRET_SECRET_ACCESS_KEY}",
        )
    return value or None


def client(settings: S3Settings) -> S3Client:
    """A client for the queue's store, with credentials read from the mounted Secret."""
    # Imported here: boto3 takes a noticeable part of a second to import, which jobs without
    # s3:// URLs should not pay.
    import boto3.session
    from botocore.config import Config

    directory = settings.credentials_dir
    session = boto3.session.Session(
        aws_access_key_id=_secret(directory, SECRET_ACCESS_KEY_ID, required=True),
        aws_secret_access_key=_secret(directory, SECRET_SECRET_ACCESS_KEY, required=True),
        aws_session_token=_secret(directory, SECRET_SESSION_TOKEN, required=False),
        region_name=settings.region,
    )
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": settings.addressing_style},
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=SOCKET_TIMEOUT_SECONDS,
        read_timeout=SOCKET_TIMEOUT_SECONDS,
        user_agent_extra="videoqueue-worker",
        # Checksums only where S3 requires them: S3-compatible servers differ in which of
        # the newer flexible checksums they accept.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=settings.endpoint, config=config)


def _part_size(settings: S3Settings, size: int) -> int:
    # Parts as large as the threshold, larger where 10,000 of them would not hold the file.
    return max(settings.multipart_threshold, -(-size // MAX_PARTS))


def _manager(s3: S3Client, settings: S3Settings, size: int) -> TransferManager:
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    config = TransferConfig(
        multipart_threshold=settings.multipart_threshold,
        multipart_chunksize=_part_size(settings, size),
        max_concurrency=MAX_CONCURRENCY,
        num_download_attempts=MAX_ATTEMPTS,
        preferred_transfer_client="classic",
    )
    return create_transfer_manager(s3, config)


class _Counter:
    """Adds up s3transfer's per-chunk progress (reported from its threads) for one caller."""

    def __init__(self, total: int | None, on_progress: Progress) -> None:
        self.total = total
        self._done = 0
        self._lock = threading.Lock()
        self._on_progress = on_progress

    def add(self, amount: int) -> None:
        with self._lock:
            # A retried download reports its restart as negative progress.
            self._done = max(0, self._done + amount)
            self._on_progress(self._done, self.total)


def _subscriber(counter: _Counter) -> Any:
    from s3transfer.subscribers import BaseSubscriber

    class Subscriber(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **_: Any) -> None:
            counter.add(bytes_transferred)

    return Subscriber()


@contextmanager
def _bounded(future: TransferFuture, seconds: float, expired: threading.Event) -> Iterator[None]:
    """Cancel the transfer when it takes longer than the sandbox's transfer time."""

    def expire() -> None:
        expired.set()
        future.cancel()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def download(
    settings: S3Settings,
    obj: S3Object,
    dest: Path,
    *,
    field: str,
    max_bytes: int,
    timeout_seconds: float,
    on_progress: Progress,
) -> None:
    """Download obj to dest, refusing it before any byte moves when it is over max_bytes."""
    what = f"downloading {obj}"
    s3 = client(settings)
    with _errors(s3, obj, what, field, timeout_seconds) as expired:
        head = s3.head_object(Bucket=obj.bucket, Key=obj.key)
        size = int(head["ContentLength"])
        if size > max_bytes:
            raise WorkerError(
                f"input {obj} is {size} bytes, over the limit of {max_bytes} "
                "(VIDEOQUEUE_MAX_INPUT_BYTES)"
            )
        counter = _Counter(size, on_progress)
        with _manager(s3, settings, size) as manager:
            future = manager.download(
                obj.bucket, obj.key, str(dest), subscribers=[_subscriber(counter)]
            )
            with _bounded(future, timeout_seconds, expired):
                future.result()
        on_progress(size, size)


def upload(
    settings: S3Settings,
    source: Path,
    obj: S3Object,
    *,
    field: str,
    timeout_seconds: float,
    on_progress: Progress,
    content_type: str = "application/octet-stream",
) -> None:
    """Upload source to obj: one PUT below the multipart threshold, parts above it (an
    interrupted multipart upload is aborted by s3transfer, so no parts are left behind)."""
    size = source.stat().st_size
    what = f"uploading to {obj}"
    s3 = client(settings)
    with _errors(s3, obj, what, field, timeout_seconds) as expired:
        counter = _Counter(size, on_progress)
        with _manager(s3, settings, size) as manager:
            future = manager.upload(
                str(source),
                obj.bucket,
                obj.key,
                extra_args={"ContentType": content_type},
                subscribers=[_subscriber(counter)],
            )
            with _bounded(future, timeout_seconds, expired):
                future.result()
        on_progress(size, size)


def delete_stale(
    settings: S3Settings, bucket: str, prefixes: list[str], *, keep: set[str], field: str
) -> None:
    """Delete the objects under `prefixes` of `bucket` that are not in `keep` (what an earlier
    run left beside a tree just uploaded over it), 1,000 keys per request."""
    s3 = client(settings)
    obj = S3Object(bucket, prefixes[0] if prefixes else "")
    with _errors(s3, obj, f"listing s3://{bucket}/", field, SOCKET_TIMEOUT_SECONDS):
        stale: list[str] = []
        for prefix in prefixes:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                stale += [o["Key"] for o in page.get("Contents", []) if o["Key"] not in keep]
        for start in range(0, len(stale), 1000):
            batch = stale[start : start + 1000]
            s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )


@contextmanager
def _errors(
    s3: S3Client, obj: S3Object, what: str, field: str, timeout_seconds: float
) -> Iterator[Any]:
    """botocore's and s3transfer's failures as WorkerErrors that name the bucket and key (the
    credentials are never in botocore's messages either)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import CancelledError

    expired = threading.Event()
    try:
        yield expired
    except CancelledError:
        if expired.is_set():
            raise WorkerError(
                f"{what}: took longer than {timeout_seconds:g}s (VIDEOQUEUE_DOWNLOAD_TIMEOUT_"
                "SECONDS, the queue's spec.worker.downloadTimeoutSeconds)"
            ) from None
        raise
    except ClientError as exc:
        raise _client_error(s3, obj, what, field, exc) from None
    except BotoCoreError as exc:  # connection failures after the retries, bad endpoints
        raise WorkerError(f"{what}: {exc}") from None
    except OSError as exc:  # writing the download
        raise WorkerError(f"{what}: {exc.strerror or exc}") from None


ACCESS_CODES: Final = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
)


def _client_error(s3: S3Client, obj: S3Object, what: str, field: str, exc: Any) -> WorkerError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket" or (code in ("404", "NotFound") and not _bucket_exists(s3, obj)):
        return _missing_bucket(what, obj, field)
    if code in ("NoSuchKey", "404", "NotFound"):
        return WorkerError(f"{what}: there is no object with key {obj.key} in bucket {obj.bucket}")
    if code == "403":
        code = _why_forbidden(s3, obj) or code
    if code in ACCESS_CODES or status == 403:
        detail = {
            "InvalidAccessKeyId": "the access key id is not known to the store",
            "SignatureDoesNotMatch": "the secret access key does not match the access key id",
        }.get(code, "the credentials are not allowed this request")
        return WorkerError(
            f"{what}: access denied to bucket {obj.bucket}, key {obj.key} ({code}: {detail}); "
            f"check the credentials in the queue's {SECRET_FIELD} Secret and the bucket's "
            "policy"
        )
    message = error.get("Message") or exc
    return WorkerError(f"{what}: {code or status}: {message}")


def check_bucket(settings: S3Settings, obj: S3Object, *, field: str) -> None:
    """Refuse an output bucket that does not exist before the work, not after it. Only a
    definite "no such bucket" counts: credentials allowed to write but not to look at the
    bucket (a PutObject-only policy) are not refused here."""
    s3 = client(settings)
    if not _bucket_exists(s3, obj):
        raise _missing_bucket(f"uploading to {obj}", obj, field)


def _missing_bucket(what: str, obj: S3Object, field: str) -> WorkerError:
    return WorkerError(
        f"{what}: bucket {obj.bucket} does not exist at the queue's S3 endpoint; create it "
        "or name an existing bucket",
        field=field,
        invalid=True,
    )


def _why_forbidden(s3: S3Client, obj: S3Object) -> str | None:
    """The error code behind a HEAD's bare 403 (its answer has no body): a one-byte GET of
    the same object is refused the same way, with the code in its body."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.get_object(Bucket=obj.bucket, Key=obj.key, Range="bytes=0-0")["Body"].close()
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code") or "") or None
    except BotoCoreError:
        return None
    return None


def _bucket_exists(s3: S3Client, obj: S3Object) -> bool:
    """Tells a missing bucket from a missing key after a HEAD (whose answer has no body)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket=obj.bucket)
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket")
    except BotoCoreError:
        return True
    return True
