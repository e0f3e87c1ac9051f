"""Waiting with deadlines: a watch where the API offers one, a poll where it does not."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import watch

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A condition did not hold in time (an AssertionError, so pytest reports it plainly)."""


def poll(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Call `probe` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def wait_for_object(
    list_fn: Callable[..., Any],
    *args: Any,
    name: str,
    predicate: Callable[[Any], bool],
    timeout: float,
    what: str,
) -> Any:
    """Watch the object called `name` until `predicate(obj)` holds; return that object.

    `list_fn` is a kubernetes-client list call (e.g. `CoreV1Api.list_namespaced_pod`, or
    `CustomObjectsApi.list_namespaced_custom_object`) and `args` its positional arguments.
    The initial list covers a state reached before the watch starts; the watch resumes from
    the list's resourceVersion so no change is missed.
    """
    deadline = time.monotonic() + timeout
    selector = f"metadata.name={name}"
    last: Any = None
    while (remaining := deadline - time.monotonic()) > 0:
        listing = list_fn(*args, field_selector=selector)
        # Typed clients return models; CustomObjectsApi returns plain dicts.
        if isinstance(listing, dict):
            items, version = listing["items"], listing["metadata"]["resourceVersion"]
        else:
            items, version = listing.items, listing.metadata.resource_version
        for item in items:
            last = item
            if predicate(item):
                return item
        stream = watch.Watch().stream(
            list_fn,
            *args,
            field_selector=selector,
            resource_version=version,
            timeout_seconds=max(1, int(remaining)),
        )
        for event in stream:
            if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                break
            last = event["object"]
            if event["type"] != "DELETED" and predicate(last):
                return last
    raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last}")


def end_process(process: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM a child (SIGCONT first: a stopped process handles no SIGTERM) and wait for it
    to exit; SIGKILL after `grace` seconds. Nothing to do for one that has ended."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
