"""The progress channel's settings: how the operator reaches Redis (from options and env
vars), and the env entries that tell worker pods where to publish. The channel itself is in
`videoqueue.controller.progress`."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from videoqueue.api.progress import (
    DEFAULT_PROGRESS_STREAM,
    ENV_PROGRESS_STREAM,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_URL,
)

ENV_REDIS_PASSWORD_FILE: Final = "VIDEOQUEUE_REDIS_PASSWORD_FILE"
ENV_REDIS_CA_FILE: Final = "VIDEOQUEUE_REDIS_CA_FILE"
DEFAULT_GROUP: Final = "videoqueue-operator"
DEFAULT_JOB_INTERVAL: Final = 5.0
DEFAULT_WRITES_PER_SECOND: Final = 20.0
# Entries another consumer has held unacknowledged this long belong to a dead replica (a live
# one acknowledges each batch within moments of reading it).
CLAIM_IDLE_SECONDS: Final = 60.0


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the job's namespace: where worker pods get the Redis password."""

    name: str
    key: str

    @classmethod
    def parse(cls, text: str) -> SecretKeyRef:
        name, sep, key = text.partition("/")
        if not sep or not name or not key or "/" in key:
            raise ValueError(
                f"--redis-password-secret {text!r}: expected NAME/KEY, the Secret (in each "
                "job's namespace) and the key holding the Redis password, e.g. redis/password"
            )
        return cls(name, key)


def default_consumer_name() -> str:
    """This replica's name in the consumer group: $POD_ID (the pod name, as for kopf's
    peering), else host and process id. A restarted container keeps its pod's name and so
    its own unacknowledged entries."""
    return os.environ.get("POD_ID") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ProgressSettings:
    """How the operator reaches Redis, and what it tells worker pods."""

    url: str
    """redis://host:port/db or rediss://... (TLS); handed to workers as it is."""
    password: str | None = field(default=None, repr=False)
    password_secret: SecretKeyRef | None = None
    """Where workers read the password from (a Secret in each job's namespace)."""
    ca_file: str | None = None
    """CA bundle for a rediss:// server with a private CA (the operator's connection)."""
    stream: str = DEFAULT_PROGRESS_STREAM
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer_name)
    job_interval: float = DEFAULT_JOB_INTERVAL
    """Seconds between two progress writes of one job, at least."""
    writes_per_second: float = DEFAULT_WRITES_PER_SECOND
    """Progress writes a second, all jobs together, at most."""
    claim_idle_seconds: float = CLAIM_IDLE_SECONDS
    """Entries another consumer has held unacknowledged this long are taken over."""

    def worker_env(self) -> list[dict[str, Any]]:
        """The env entries that tell a worker pod where to publish."""
        env: list[dict[str, Any]] = [
            {"name": ENV_REDIS_URL, "value": self.url},
            {"name": ENV_PROGRESS_STREAM, "value": self.stream},
        ]
        if self.password_secret is not None:
            # Optional: a missing Secret costs the job its live progress, never its run.
            ref = {
                "name": self.password_secret.name,
                "key": self.password_secret.key,
                "optional": True,
            }
            env.append({"name": ENV_REDIS_PASSWORD, "valueFrom": {"secretKeyRef": ref}})
        return env


def check_redis_url(url: str) -> str:
    """`url` if the operator can use it and hand it to workers; else ValueError saying why."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"--redis-url {url!r}: the scheme must be redis:// or rediss:// (TLS), "
            "e.g. redis://redis.media.svc:6379/0"
        )
    if not parts.hostname:
        raise ValueError(f"--redis-url {url!r}: no host; e.g. redis://redis.media.svc:6379/0")
    if parts.password:
        # The URL is copied into every worker pod's spec, readable by anyone who can get pods.
        raise ValueError(
            "--redis-url must not contain a password (it is copied into every worker pod's "
            f"spec); give it in ${ENV_REDIS_PASSWORD} or a file (--redis-password-file) and "
            "tell workers its Secret with --redis-password-secret NAME/KEY"
        )
    try:
        _ = parts.port
    except ValueError as e:
        raise ValueError(f"--redis-url {url!r}: bad port ({e})") from None
    return url


def settings_from_options(
    *,
    url: str | None,
    password_file: str | None,
    password_secret: str | None,
    ca_file: str | None,
    stream: str | None,
    job_interval: float = DEFAULT_JOB_INTERVAL,
    writes_per_second: float = DEFAULT_WRITES_PER_SECOND,
    environ: Mapping[str, str] | None = None,
) -> ProgressSettings | None:
    """The progress settings from command-line options, each falling back to its env var;
    None when no Redis URL is given (no progress channel). Raises ValueError naming the
    option and the fix."""
    env = os.environ if environ is None else environ
    url = url or env.get(ENV_REDIS_URL) or None
    if url is None:
        for option, value in (
            ("--redis-password-file", password_file),
            ("--redis-password-secret", password_secret),
        ):
            if value:
                raise ValueError(f"{option} needs --redis-url (or ${ENV_REDIS_URL})")
        return None
    check_redis_url(url)
    password = env.get(ENV_REDIS_PASSWORD) or None
    password_file = password_file or env.get(ENV_REDIS_PASSWORD_FILE) or None
    if password_file is not None:
        if password is not None:
            raise ValueError(
                f"the Redis password is given twice, in ${ENV_REDIS_PASSWORD} and in "
                f"--redis-password-file (or ${ENV_REDIS_PASSWORD_FILE}); keep one"
            )
        try:
            # A mounted Secret's file; a trailing newline is an editor's, not the password's.
            password = Path(password_file).read_text().rstrip("\r\n") or None
        except OSError as e:
            raise ValueError(
                f"--redis-password-file {password_file}: cannot read it ({e})"
            ) from None
    ca_file = ca_file or env.get(ENV_REDIS_CA_FILE) or None
    if ca_file is not None and not Path(ca_file).is_file():
        raise ValueError(f"--redis-ca-file {ca_file}: no such file")
    if job_interval <= 0 or writes_per_second <= 0:
        raise ValueError(
            "--progress-interval and --progress-writes-per-second must be positive numbers"
        )
    return ProgressSettings(
        url=url,
        password=password,
        password_secret=SecretKeyRef.parse(password_secret) if password_secret else None,
        ca_file=ca_file,
        stream=stream or env.get(ENV_PROGRESS_STREAM) or DEFAULT_PROGRESS_STREAM,
        job_interval=job_interval,
        writes_per_second=writes_per_second,
    )
