"""The operator's own Kubernetes API I/O: one small async client on aiohttp.

Every request the operator makes (listing, watching jobs and pods, creating pods, patching
status, deleting, posting Events) goes through `KubeClient`, so connection pooling, retries,
timeouts, write concurrency and request counting live in one place; kopf watches only queues
and nodes, and runs peering.

Return conventions, chosen so that callers branch on values rather than exceptions for the
outcomes a controller expects:
- `create` -> `CreateResult(obj, created)`; an object that already exists (HTTP 409
  AlreadyExists) is read back and returned with `created=False`.
- `get` and `patch` -> the object, or None when it does not exist (404).
- `delete` -> True when the deletion was accepted; False when the object is already gone or
  is not the one the uid precondition names (a re-created object).
- `post_event` never raises.
Anything else the API server refuses raises `KubeApiError` carrying the server's message;
a server that cannot be reached after the retries raises `KubeConnectionError`.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import aiohttp
import kopf
import orjson

from videoqueue import __version__

# The errors are part of the client's interface: importable from here.
from videoqueue.controller.kube_errors import FencedError as FencedError
from videoqueue.controller.kube_errors import KubeApiError as KubeApiError
from videoqueue.controller.kube_errors import KubeConfigError as KubeConfigError
from videoqueue.controller.kube_errors import KubeConnectionError as KubeConnectionError
from videoqueue.controller.kube_errors import KubeError as KubeError
from videoqueue.controller.kube_helpers import (
    EVENTS,
    PATCH_CONTENT_TYPES,
    RETRYABLE_STATUSES,
    ClientSettings,
    CreateResult,
    EventType,
    Obj,
    ObjList,
    PatchBody,
    PatchType,
    PropagationPolicy,
    Resource,
    backoff_delay,
    build_event,
    resource_label,
    retry_after_seconds,
    status_class,
)
from videoqueue.controller.kubeconfig import (
    SERVICE_ACCOUNT_DIR,
    authorization_header,
    find_connection_info,
    is_service_account_token,
    ssl_context,
)

logger = logging.getLogger(__name__)

DEFAULT_COMPONENT = "videoqueue-operator"
# Projected service-account tokens rotate (hourly by default); the kubelet rewrites the
# file well before expiry, so re-reading it this often never sends a stale token.
TOKEN_REFRESH_SECONDS = 60.0

# asyncio gives every TLS connection a read buffer of 256 KiB, zero-filled and so resident:
# after a burst of writes that filled the pool (64 connections plus the watches), 19 MiB of
# the operator's memory, a tenth of it at 20,000 pending jobs. Responses are read in 64 KiB
# pieces instead (a listing page is a few of them).
TLS_READ_BUFFER_BYTES = 64 * 1024
# Failures before the request left this process: always safe to repeat, whatever the verb.
_NOT_SENT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class ListOptions(TypedDict, total=False):
    """How `list` and `list_pages` select and page: label and field selectors (None: all) and
    the page size (default 500; None or 0: one page)."""

    label_selector: str | None
    field_selector: str | None
    limit: int | None


def bound_tls_read_buffers() -> None:
    """TLS_READ_BUFFER_BYTES for the TLS connections of this process (asyncio's protocol
    class reads its buffer size from a class attribute; kept if it is already smaller)."""
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    if protocol is not None and getattr(protocol, "max_size", 0) > TLS_READ_BUFFER_BYTES:
        protocol.max_size = TLS_READ_BUFFER_BYTES


class KubeClient:
    """An async client for the handful of calls the operator makes.

    Build it with `from_kopf` or `from_kubeconfig` inside the running event loop, and close
    it (`await close()` or `async with`). `request_counts` counts every HTTP attempt by
    (verb, resource, status class): verb is get/list/create/patch/delete, resource the plural
    with any subresource ("videojobs/status"), class "2xx".."5xx" or "error" (no response).
    `write_guard`, when set, runs before every write is sent (each retry too) and raises
    `FencedError` to refuse it: the fence of `videoqueue.controller.fencing`.
    """

    def __init__(
        self,
        server: str,
        session: aiohttp.ClientSession,
        *,
        settings: ClientSettings | None = None,
        authorization: str | None = None,
        token_file: Path | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.settings = settings or ClientSettings()
        self.request_counts: Counter[tuple[str, str, str]] = Counter()
        self._session = session
        self._authorization = authorization
        self._token_file = token_file
        self._token_read_at = time.monotonic()
        self._write_slots = asyncio.Semaphore(self.settings.write_concurrency)
        self._rng = rng or random.Random()
        self._instance = socket.gethostname()
        self.write_guard: Callable[[], None] | None = None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    async def from_kopf(
        cls,
        info: kopf.ConnectionInfo,
        *,
        settings: ClientSettings | None = None,
        token_file: Path | None = None,
    ) -> Self:
        """A client with the credentials kopf logged in with (e.g. from an `on.login`
        handler). A token read from the pod's service account is re-read as it rotates."""
        if token_file is None and info.token and is_service_account_token(info.token):
            token_file = SERVICE_ACCOUNT_DIR / "token"
        settings = settings or ClientSettings()
        bound_tls_read_buffers()
        connector = aiohttp.TCPConnector(
            limit=settings.connection_limit, ssl=ssl_context(info), keepalive_timeout=60
        )
        session = aiohttp.ClientSession(
            connector=connector,
            headers={
                "Accept": "application/json",
                "User-Agent": settings.user_agent or f"videoqueue-operator/{__version__}",
            },
            timeout=aiohttp.ClientTimeout(
                total=settings.request_timeout, sock_connect=settings.connect_timeout
            ),
            proxy=info.proxy_url,
            trust_env=info.trust_env,
        )
        return cls(
            info.server,
            session,
            settings=settings,
            authorization=authorization_header(info),
            token_file=token_file,
        )

    @classmethod
    async def from_kubeconfig(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        settings: ClientSettings | None = None,
    ) -> Self:
        """A client from `path`, else $KUBECONFIG (several files merged), else
        ~/.kube/config, else the pod's service account (`find_connection_info`)."""
        info, token_file = find_connection_info(path, context=context)
        return await cls.from_kopf(info, settings=settings, token_file=token_file)

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the API --------------------------------------------------------------------------

    async def create(self, resource: Resource, namespace: str | None, body: Obj) -> CreateResult:
        """Create `body`; when an object of that name exists, return it with created=False.

        Objects with a fixed name are retried like idempotent requests: a retry after a
        create that did land answers 409, and the object is read back.
        """
        name = (body.get("metadata") or {}).get("name")
        for _ in range(3):
            status, raw = await self._request(
                "POST",
                "create",
                resource.plural,
                resource.path(namespace),
                body=body,
                idempotent=bool(name),
                write=True,
            )
            if status != 409 or not name:
                return CreateResult(_ok(status, raw), created=True)
            error = KubeApiError.from_response(status, raw)
            if error.reason != "AlreadyExists":
                raise error
            existing = await self.get(resource, namespace, name)
            if existing is not None:
                return CreateResult(existing, created=False)
            # Deleted between our POST and GET: the name is free again, so try again.
        raise KubeApiError(409, "AlreadyExists", f"{resource.plural}/{name} keeps flapping", {})

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        status, raw = await self._request(
            "GET", "get", resource.plural, resource.path(namespace, name)
        )
        return None if status == 404 else _ok(status, raw)

    async def list(
        self, resource: Resource, namespace: str | None = None, **options: Unpack[ListOptions]
    ) -> tuple[ObjList, str]:
        """All matching objects, fetched in pages of `limit`, and the list's resourceVersion.

        Items get `apiVersion` and `kind` filled in (the API server leaves them out of list
        items), so they can be passed on as they are, e.g. to `post_event`.
        """
        items: ObjList = []
        version = ""
        pages = self.list_pages(resource, namespace, **options)
        async for page, page_version in pages:
            if page is None:
                items = []  # the listing started over
            else:
                items += page
            version = page_version
        return items, version

    async def list_pages(
        self, resource: Resource, namespace: str | None = None, **options: Unpack[ListOptions]
    ) -> AsyncIterator[tuple[ObjList | None, str]]:
        """`list` a page at a time, for callers that need not hold every object at once:
        yields (items, the list's resourceVersion once known, else ""). A continue token
        expires with etcd compaction (410), and the only remedy is to start the listing
        over: then (None, "") comes first and the pages follow from the start again."""
        params: dict[str, str] = {}
        if label_selector := options.get("label_selector"):
            params["labelSelector"] = label_selector
        if field_selector := options.get("field_selector"):
            params["fieldSelector"] = field_selector
        if limit := options.get("limit", 500):
            params["limit"] = str(limit)
        for attempt in range(3):
            if attempt:
                yield None, ""
            token: str | None = None
            while True:
                page_params = {**params, "continue": token} if token else params
                status, raw = await self._request(
                    "GET", "list", resource.plural, resource.path(namespace), params=page_params
                )
                if status == 410 and token:
                    break
                page = _ok(status, raw)
                api_version = page.get("apiVersion", resource.api_version)
                kind = str(page.get("kind", "")).removesuffix("List")
                items: ObjList = page.get("items") or []
                for item in items:
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", kind)
                metadata = page.get("metadata") or {}
                token = metadata.get("continue")
                del page, raw  # hold one page at a time
                if not token:
                    yield items, str(metadata.get("resourceVersion", ""))
                    return
                yield items, ""
        raise KubeApiError(410, "Expired", f"listing {resource.plural} kept expiring", {})

    async def watch_lines(
        self,
        resource: Resource,
        version: str,
        *,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[bytes]:
        """One watch request over all namespaces from resourceVersion `version`, bookmarks
        asked for: yields each event's JSON line until the server ends the stream (after
        about `timeout_seconds`). One attempt, no retries (`videoqueue.controller.watch`
        decides when to open the next); a refusal raises KubeApiError (410: `version` is too
        old), a failed connection KubeConnectionError."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        headers = {}
        if authorization := self._current_authorization():
            headers["Authorization"] = authorization
        # No total timeout: a quiet stream may only carry a bookmark a minute.
        timeout = aiohttp.ClientTimeout(
            sock_connect=self.settings.connect_timeout, sock_read=timeout_seconds + 30
        )
        url = self.server + resource.path(None)
        try:
            async with self._session.get(
                url, params=params, headers=headers, timeout=timeout
            ) as response:
                self.request_counts["watch", resource.plural, status_class(response.status)] += 1
                if response.status != 200:
                    if response.status == 401 and self._token_file is not None:
                        self._reload_token()
                    raise KubeApiError.from_response(response.status, await response.read())
                # Split by hand: aiohttp's readline refuses lines over 128 KiB.
                pending = bytearray()
                async for chunk in response.content.iter_any():
                    pending += chunk
                    start = 0
                    while (end := pending.find(b"\n", start)) >= 0:
                        if end > start:
                            yield bytes(pending[start:end])
                        start = end + 1
                    del pending[:start]
        except _TRANSPORT_ERRORS as error:
            self.request_counts["watch", resource.plural, "error"] += 1
            raise KubeConnectionError(f"watching {resource.plural}: {error!r}") from error

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: PatchBody,
        *,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
    ) -> Obj | None:
        """Apply a merge, JSON or strategic-merge patch; the patched object, None if absent.

        Custom resources accept merge and JSON patches only; strategic is for built-ins.
        """
        status, raw = await self._request(
            "PATCH",
            "patch",
            resource_label(resource, subresource),
            resource.path(namespace, name, subresource),
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
            write=True,
        )
        return None if status == 404 else _ok(status, raw)

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
        propagation_policy: PropagationPolicy = "Background",
    ) -> bool:
        """Delete; True when accepted, False when already gone or when `uid` no longer
        matches (the name now belongs to a re-created object, which must survive)."""
        options: Obj = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation_policy,
        }
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        status, raw = await self._request(
            "DELETE",
            "delete",
            resource.plural,
            resource.path(namespace, name),
            body=options,
            write=True,
        )
        if status == 404 or (status == 409 and uid is not None):
            return False
        _ok(status, raw)
        return True

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: EventType,
        reason: str,
        message: str,
        component: str = DEFAULT_COMPONENT,
    ) -> None:
        """Record a core/v1 Event about `involved` (the object itself). Events are advice
        for people: a failure is logged and dropped, never raised into the caller."""
        try:
            event = build_event(
                involved,
                type_=type_,
                reason=reason,
                message=message,
                component=component,
                instance=self._instance,
                now=datetime.now(UTC),
                suffix=f"{time.time_ns():x}",
            )
            await self.create(EVENTS, event["metadata"]["namespace"], event)
        except Exception:
            meta = involved.get("metadata") or {}
            logger.warning(
                "dropped %s event %s for %s %s/%s",
                type_,
                reason,
                involved.get("kind"),
                meta.get("namespace"),
                meta.get("name"),
                exc_info=True,
            )

    # -- transport ------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        verb: str,
        label: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        idempotent: bool = True,
        write: bool = False,
    ) -> tuple[int, bytes]:
        """One API call with retries; returns the final (status, body) for the caller to
        interpret, raising only when no response could be had."""
        url = self.server + path
        data = orjson.dumps(body) if body is not None else None
        settings = self.settings
        token_reloaded = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Content-Type": content_type} if data is not None else {}
            if authorization := self._current_authorization():
                headers["Authorization"] = authorization
            delay: float
            try:
                async with self._write_slots if write else contextlib.nullcontext():
                    if write and self.write_guard is not None:
                        self.write_guard()  # at the last moment: a write may wait for a slot
                    async with self._session.request(
                        method, url, params=params, data=data, headers=headers
                    ) as response:
                        raw = await response.read()
                        status = response.status
                        retry_after = response.headers.get("Retry-After")
            except _TRANSPORT_ERRORS as error:
                self.request_counts[verb, label, "error"] += 1
                repeatable = idempotent or isinstance(error, _NOT_SENT_ERRORS)
                if not repeatable or attempt >= settings.max_attempts:
                    raise KubeConnectionError(f"{method} {path}: {error!r}") from error
                delay = self._backoff(attempt)
                logger.debug(
                    "%s %s failed (%r); retry %d in %.2fs", method, path, error, attempt, delay
                )
            else:
                self.request_counts[verb, label, status_class(status)] += 1
                if status == 401 and self._token_file is not None and not token_reloaded:
                    # The token may have rotated since we last read it.
                    token_reloaded = True
                    self._reload_token()
                    continue
                # 429 means the request was not processed: repeatable for any verb.
                retryable = status == 429 or (idempotent and status in RETRYABLE_STATUSES)
                if not retryable or attempt >= settings.max_attempts:
                    return status, raw
                waited = retry_after_seconds(retry_after, now=datetime.now(UTC))
                if waited is not None:
                    delay = min(waited, settings.retry_after_cap)
                else:
                    delay = self._backoff(attempt)
                logger.debug(
                    "%s %s answered %d; retry %d in %.2fs", method, path, status, attempt, delay
                )
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt - 1,
            base=self.settings.backoff_base,
            cap=self.settings.backoff_cap,
            rng=self._rng,
        )

    def _current_authorization(self) -> str | None:
        if (
            self._token_file is not None
            and time.monotonic() - self._token_read_at > TOKEN_REFRESH_SECONDS
        ):
            self._reload_token()
        return self._authorization

    def _reload_token(self) -> None:
        assert self._token_file is not None
        self._token_read_at = time.monotonic()
        try:
            token = self._token_file.read_text().strip()
        except OSError as error:
            logger.warning("could not re-read the token from %s: %s", self._token_file, error)
            return
        if token:
            self._authorization = f"Bearer {token}"


def _ok(status: int, raw: bytes) -> Obj:
    if 200 <= status < 300:
        result: Obj = orjson.loads(raw) if raw else {}
        return result
    raise KubeApiError.from_response(status, raw)
