"""The API server's audit log, for tests that count who wrote what
(`ClusterConfig(audit_log=True)`).

Writes only (create, update, patch, delete, deletecollection), at Metadata level: who (user,
User-Agent), what (verb, resource, namespace, name), when, and the answer's status code; no
request or response bodies, and nothing for reads. The log backend writes each event as it
happens (blocking mode), so a test reads it without waiting for a batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""


def apiserver_args(state_dir: Path) -> list[str]:
    """kube-apiserver flags that write the audit log to `log_path(state_dir)`."""
    policy = state_dir / "audit-policy.yaml"
    policy.write_text(POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={log_path(state_dir)}",
        "--audit-log-mode=blocking",
        "--audit-log-format=json",
        "--audit-log-maxsize=4096",  # MB before rotation: one file holds a whole session
    ]


def log_path(state_dir: Path) -> Path:
    return state_dir / "logs" / "audit.log"


@dataclass(frozen=True)
class Write:
    """One write the API server answered (the ResponseComplete stage)."""

    verb: str
    user_agent: str
    resource: str  # plural, with "/subresource" if any
    namespace: str
    name: str
    code: int
    at: datetime  # when the API server received it

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Write:
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "")
        if sub := ref.get("subresource"):
            resource = f"{resource}/{sub}"
        return cls(
            verb=event.get("verb", ""),
            user_agent=event.get("userAgent", ""),
            resource=resource,
            namespace=ref.get("namespace", ""),
            name=ref.get("name", ""),
            code=int((event.get("responseStatus") or {}).get("code") or 0),
            at=datetime.fromisoformat(event["requestReceivedTimestamp"]),
        )


def writes(state_dir: Path) -> Iterator[Write]:
    """Every write logged so far, oldest first."""
    path = log_path(state_dir)
    if not path.exists():
        return
    with path.open() as log:
        for line in log:
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("stage") == "ResponseComplete":
                yield Write.from_event(event)
