"""What the operator's API client raises (`videoqueue.controller.kube`): the API server's
refusals with its own message, unreachable servers, unusable credentials."""

from __future__ import annotations

import contextlib
import json
from http import HTTPStatus
from typing import Any


class KubeError(Exception):
    """Base of everything this client raises."""


class KubeApiError(KubeError):
    """The API server answered with an error status (after any retries)."""

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason  # the Status reason (AlreadyExists, Invalid, ...) or HTTP phrase
        self.message = message  # the API server's own words
        self.body = body  # the decoded Status object, or the raw text if it was not JSON

    @classmethod
    def from_response(cls, status: int, raw: bytes) -> KubeApiError:
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text) if text else {}
        except ValueError:
            body = None
        if isinstance(body, dict):
            reason = str(body.get("reason") or _http_phrase(status))
            message = str(body.get("message") or text)
            return cls(status, reason, message, body)
        return cls(status, _http_phrase(status), text.strip(), text)


class KubeConnectionError(KubeError):
    """The API server could not be reached or did not answer in time, after any retries."""


class FencedError(KubeError):
    """A write refused before it was sent: this replica holds no fresh claim to act
    (`videoqueue.controller.fencing`)."""


class KubeConfigError(KubeError):
    """No usable credentials: no kubeconfig and not running in a pod, or an unsupported one."""


def _http_phrase(status: int) -> str:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase.replace(" ", "")
    return "Unknown"
