"""Failures the worker explains: what went wrong, in which field, and what to do.

The message of a `WorkerError` becomes the container's termination message, which the
operator copies into the job's status, so it is written for the person who made the job.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The worker's exit codes. Anything but OK fails the attempt (the queue's retry rules
    decide whether it runs again)."""

    OK = 0
    FAILED = 1
    """The work itself failed: ffmpeg, a download or an upload."""
    INVALID = 2
    """The job is wrong (params, URLs, payload); a retry will fail the same way."""
    INTERRUPTED = 143
    """Stopped by SIGTERM (the pod was deleted); the same code a shell reports."""


class WorkerError(Exception):
    """A failure with a message fit for job status."""

    def __init__(self, message: str, *, field: str | None = None, invalid: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.exit_code = ExitCode.INVALID if invalid else ExitCode.FAILED

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def invalid(field: str, message: str) -> WorkerError:
    """A bad-input error about `field` (a path in the VideoJob such as spec.params.crf)."""
    return WorkerError(message, field=field, invalid=True)
