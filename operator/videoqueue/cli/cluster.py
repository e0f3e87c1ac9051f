"""The plugin's view of the cluster: kubeconfig handling like kubectl's and the few API calls
it makes, with every failure turned into a `CliError` that names the object and namespace."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from videoqueue.api import GROUP, VERSION

JOBS, QUEUES = "videojobs", "videoqueues"
KINDS = {JOBS: "VideoJob", QUEUES: "VideoQueue"}
SHORT = {JOBS: "vj", QUEUES: "vq"}


class CliError(Exception):
    """A failure to report to the user: one line saying what is wrong and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def kubeconfig_paths(flag: str | None) -> str:
    """--kubeconfig, else $KUBECONFIG (may list several files, as for kubectl), else
    ~/.kube/config."""
    if flag:
        return flag
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


class Cluster:
    """One namespace of one cluster, as selected by the kubectl-style flags."""

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> None:
        paths = kubeconfig_paths(kubeconfig)
        try:
            contexts, current = config.list_kube_config_contexts(config_file=paths)
            chosen = current
            if context is not None:
                chosen = next((c for c in contexts if c["name"] == context), None)
                if chosen is None:
                    names = ", ".join(sorted(c["name"] for c in contexts)) or "none"
                    raise CliError(f"context {context!r} not found in {paths} (contexts: {names})")
            self.api = config.new_client_from_config(config_file=paths, context=context)
        except ConfigException as error:
            raise CliError(
                f"cannot load the kubeconfig ({paths}): {error}; "
                "pass --kubeconfig or set KUBECONFIG"
            ) from error
        self.namespace = (
            namespace or (chosen or {}).get("context", {}).get("namespace") or "default"
        )
        self.custom = client.CustomObjectsApi(self.api)

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def get(self, plural: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            plural,
            name,
            "get",
            self.custom.get_namespaced_custom_object,
            name,
        )
        return result

    def list(self, plural: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        listing = self._call(
            plural,
            None,
            "list",
            self.custom.list_namespaced_custom_object,
            **kwargs,
        )
        items: list[dict[str, Any]] = listing["items"]
        return items

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name") or body.get("metadata", {}).get(
            "generateName", ""
        )
        result: dict[str, Any] = self._call(
            plural,
            name,
            "create",
            self.custom.create_namespaced_custom_object,
            body,
        )
        return result

    def merge_patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        # A dict body is sent as application/merge-patch+json by the kubernetes client.
        result: dict[str, Any] = self._call(
            plural,
            name,
            "patch",
            self.custom.patch_namespaced_custom_object,
            name,
            patch,
        )
        return result

    def follow(self, plural: str, name: str, *, timeout: float | None) -> Iterator[dict[str, Any]]:
        """The object now and after every change, from a watch; ends with a CliError when it
        is deleted or `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        selector = f"metadata.name={name}"
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise CliError(
                    f"timed out after {timeout:g}s watching {self._what(plural, name)}", 1
                )
            listing = self._call(
                plural,
                name,
                "list",
                self.custom.list_namespaced_custom_object,
                field_selector=selector,
            )
            if not listing["items"]:
                raise CliError(f"{self._what(plural, name)} not found (or it was deleted)")
            yield listing["items"][0]
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                plural,
                field_selector=selector,
                resource_version=listing["metadata"]["resourceVersion"],
                timeout_seconds=max(1, min(int(remaining or 300), 300)),
            )
            try:
                for event in stream:
                    if event["type"] == "ERROR":  # 410 Gone and friends: list again
                        break
                    if event["type"] == "DELETED":
                        raise CliError(f"{self._what(plural, name)} was deleted")
                    yield event["object"]
                    if deadline is not None and time.monotonic() > deadline:
                        break
            except (ApiException, urllib3.exceptions.HTTPError) as error:
                if isinstance(error, ApiException) and error.status in (401, 403):
                    raise self._translate(error, plural, name, "watch") from error
                # A dropped watch: list again and go on.

    def _what(self, plural: str, name: str | None) -> str:
        if name is None:
            return f"{KINDS[plural]}s in namespace {self.namespace!r}"
        return f"{KINDS[plural]} {name!r} in namespace {self.namespace!r}"

    def _call(
        self, plural: str, name: str | None, verb: str, fn: Any, *args: Any, **kw: Any
    ) -> Any:
        """`fn` (a CustomObjectsApi method) on `plural` in the namespace, then `args`."""
        try:
            return fn(GROUP, VERSION, self.namespace, plural, *args, **kw)
        except ApiException as error:
            raise self._translate(error, plural, name, verb) from error
        except urllib3.exceptions.HTTPError as error:
            host = self.api.configuration.host
            raise CliError(
                f"cannot reach the API server at {host}: {error}; check the kubeconfig's "
                "cluster and that the cluster is running"
            ) from error

    def _translate(self, error: ApiException, plural: str, name: str | None, verb: str) -> CliError:
        what = self._what(plural, name)
        detail = _api_message(error)
        if error.status == 404 and _names_object(error) and verb != "create":
            return CliError(
                f"{what} not found; list them with: kubectl get {SHORT[plural]} -n {self.namespace}"
            )
        if error.status == 404:
            return CliError(
                f"the API server does not serve {plural}.{GROUP}: {detail}; install the CRDs "
                "(make install, or the Helm chart)"
            )
        if error.status == 403:
            return CliError(f"not allowed to {verb} {what}: {detail}")
        if error.status == 409 and verb == "create":
            return CliError(f"{what} already exists; choose another name or delete it first")
        if error.status == 422:
            return CliError(f"the API server rejected {what}: {detail}")
        return CliError(f"{verb} {what} failed ({error.status} {error.reason}): {detail}")


def _body(error: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _api_message(error: ApiException) -> str:
    return str(_body(error).get("message") or error.body or error.reason)


def _names_object(error: ApiException) -> bool:
    """A 404 about a missing object carries its name; one about a resource type the server
    does not serve (CRDs not installed) does not."""
    details = _body(error).get("details")
    return isinstance(details, dict) and bool(details.get("name"))
