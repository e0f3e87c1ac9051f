"""Getting the input and delivering the output: file://, http(s):// and s3:// (`s3`, through
the queue's own object store), inside the queue's sandbox (`sandbox`).

Local paths are confined to the file roots when the URL is parsed. Downloads stream into the
attempt's work dir with a size limit; uploads are one HTTP PUT of the file (what presigned
object-store URLs expect). Every HTTP connection goes to an address the sandbox checked (the
host is resolved once, and the socket connects to that address; TLS still verifies the
certificate for the host name). Redirects (GET only, at most MAX_REDIRECTS) are followed here,
each hop checked again: http(s) only, host allowed. A whole download or upload is bounded in
time as well as per socket operation.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from videoqueue.api.worker import ENV_DOWNLOAD_TIMEOUT_SECONDS
from videoqueue_worker import s3
from videoqueue_worker.errors import WorkerError, invalid
from videoqueue_worker.sandbox import Destination, Sandbox, normalize_host

INPUT_SCHEMES: Final = ("file", "http", "https", "s3")
OUTPUT_SCHEMES: Final = ("file", "http", "https", "s3")
HTTP_SCHEMES: Final = ("http", "https")
CHUNK_BYTES: Final = 1 << 20
HTTP_TIMEOUT_SECONDS: Final = 60.0
"""Most seconds one socket operation (connect, one read, one send) may wait."""
MAX_REDIRECTS: Final = 5
REDIRECT_STATUSES: Final = (301, 302, 303, 307, 308)
USER_AGENT: Final = "videoqueue-worker"

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes if known)."""


@dataclass(frozen=True)
class Location:
    """A checked input or output URL."""

    url: str
    scheme: str
    path: Path | None
    """The real local path of a file:// URL, inside a file root."""
    field: str
    sandbox: Sandbox
    s3: s3.S3Object | None = None
    """The bucket and key of an s3:// URL."""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def is_directory(self) -> bool:
        """An output URL ending in '/' names a directory (or prefix); the file name is added."""
        return self.url.endswith("/")

    def child(self, name: str) -> Location:
        return parse_location(
            self.url + urllib.parse.quote(name),
            field=self.field,
            allowed=(self.scheme,),
            sandbox=self.sandbox,
        )


def parse_location(url: str, *, field: str, allowed: tuple[str, ...], sandbox: Sandbox) -> Location:
    """Check a URL against the allowed schemes and the sandbox's paths. A bare absolute path
    counts as file://. The host of an http(s) URL is only checked for form here; whether it
    may be reached is decided when connecting (`check_reachable` asks early)."""
    if url.startswith("/"):
        url = "file://" + url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise invalid(field, f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in allowed:
        raise invalid(
            field,
            f"scheme {scheme or '(none)'!r} is not supported; use "
            + " or ".join(f"{s}://" for s in allowed),
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise invalid(field, f"file:// URLs name a local path, not host {parts.netloc!r}")
        # Decoded once: a '%2e%2e' becomes '..' (and is resolved), a '%252e' stays '%2e'.
        path = urllib.parse.unquote(parts.path)
        return Location(
            url=url, scheme=scheme, path=sandbox.confine(path, field=field), field=field,
            sandbox=sandbox,
        )  # fmt: skip
    if scheme == "s3":
        if sandbox.s3 is None:
            raise invalid(
                field,
                "s3:// URLs need the queue's spec.storage.s3 (endpoint, region, credentials "
                "Secret), and this queue has none; set it, or use another queue",
            )
        obj = s3.parse_s3_url(url, field=field, directory_ok=True)
        return Location(url=url, scheme=scheme, path=None, field=field, sandbox=sandbox, s3=obj)
    http_endpoint(url, field=field)
    return Location(url=url, scheme=scheme, path=None, field=field, sandbox=sandbox)


def redact(url: str) -> str:
    # Presigned URLs carry credentials in the query string; never echo them into status.
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # user:password@ goes too
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    """Normalized (`sandbox.normalize_host`): what is resolved, sent as Host and SNI."""
    port: int
    target: str
    """Path and query, what the request line asks for."""


def http_endpoint(url: str, *, field: str) -> Endpoint:
    """The parts of an http(s) URL a request needs, checked for form."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise invalid(field, f"{redact(url)} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in HTTP_SCHEMES:
        raise invalid(field, f"{redact(url)} is not an http(s) URL")
    if "@" in parts.netloc:
        # Never sent and never echoed: presigned URLs carry their credentials in the query.
        raise invalid(
            field,
            f"{redact(url)} has credentials (user@host) in it, which the worker does not send; "
            "use a presigned URL (credentials in the query string) instead",
        )
    if not parts.hostname:
        raise invalid(field, f"{scheme}:// URL without a host")
    try:
        host = normalize_host(urllib.parse.unquote(parts.hostname))
    except ValueError as exc:
        raise invalid(field, str(exc)) from None
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    default_port = 443 if scheme == "https" else 80
    return Endpoint(scheme=scheme, host=host, port=port or default_port, target=target)


def check_reachable(location: Location) -> None:
    """Refuse an http(s) location whose host the sandbox does not allow, or an s3:// one
    whose bucket does not exist, before any work is done (hosts are checked again when
    connecting). Resolution and connection failures are left for then."""
    if location.s3 is not None and location.sandbox.s3 is not None:
        s3.check_bucket(location.sandbox.s3, location.s3, field=location.field)
    if location.path is not None or location.s3 is not None:
        return
    endpoint = http_endpoint(location.url, field=location.field)
    with contextlib.suppress(OSError):
        location.sandbox.check_host(endpoint.host, endpoint.port, field=location.field)


# -- connections ---------------------------------------------------------------------------


class _Deadline:
    """The time bound of one whole transfer: when it passes, the transfer's sockets are shut
    down, which ends any read or send blocked on them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._end = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self.expired:
                return
        self._shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _connect_checked(destination: Destination, deadline: _Deadline) -> socket.socket:
    """A TCP connection to one of the checked addresses, tried in order; the host name is
    not looked up again."""
    error: OSError | None = None
    for address in destination.addresses:
        # A little past the deadline: when that comes, the deadline's own message is given.
        timeout = min(HTTP_TIMEOUT_SECONDS, deadline.remaining() + 1.0)
        try:
            sock = socket.create_connection((address, destination.port), timeout)
        except OSError as exc:
            error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline.watch(sock)
        return sock
    assert error is not None
    raise error


class _CheckedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, destination: Destination, deadline: _Deadline) -> None:
        super().__init__(destination.host, destination.port, timeout=HTTP_TIMEOUT_SECONDS)
        self._destination = destination
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _connect_checked(self._destination, self._deadline)


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, destination: Destination, deadline: _Deadline) -> None:
        self._tls = ssl.create_default_context()  # verifies the certificate and host name
        super().__init__(
            destination.host, destination.port, timeout=HTTP_TIMEOUT_SECONDS, context=self._tls
        )
        self._destination = destination
        self._deadline = deadline

    def connect(self) -> None:
        sock = _connect_checked(self._destination, self._deadline)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self._destination.host)
        except BaseException:
            sock.close()
            raise


def _connection(
    endpoint: Endpoint, *, field: str, sandbox: Sandbox, deadline: _Deadline
) -> http.client.HTTPConnection:
    """A connection (not yet connected) to the endpoint's host, checked by the sandbox."""
    destination = sandbox.check_host(endpoint.host, endpoint.port, field=field)
    if endpoint.scheme == "https":
        return _CheckedHTTPSConnection(destination, deadline)
    return _CheckedHTTPConnection(destination, deadline)


@contextlib.contextmanager
def _deadline(location: Location, what: str) -> Iterator[_Deadline]:
    """The whole transfer within the sandbox's time; its errors as WorkerErrors about `what`
    ("downloading https://host/path")."""
    deadline = _Deadline(location.sandbox.transfer_timeout_seconds)
    try:
        yield deadline
    except (http.client.HTTPException, OSError) as exc:
        if deadline.expired:
            raise _timed_out(what, deadline) from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise WorkerError(f"{what}: {reason or type(exc).__name__}") from None
    finally:
        deadline.cancel()
    if deadline.expired:
        raise _timed_out(what, deadline)


def _timed_out(what: str, deadline: _Deadline) -> WorkerError:
    return WorkerError(
        f"{what}: took longer than {deadline.seconds:g}s ({ENV_DOWNLOAD_TIMEOUT_SECONDS}, "
        "the queue's spec.worker.downloadTimeoutSeconds)"
    )


# -- input ---------------------------------------------------------------------------------


def fetch(location: Location, dest: Path, *, max_bytes: int, on_progress: Progress) -> Path:
    """The input as a local file: a file:// path as it is, an http(s) URL downloaded to dest."""
    if location.path is not None:
        if not location.path.is_file():
            raise WorkerError(f"input file {location.path} does not exist or is not a file")
        size = location.path.stat().st_size
        if size > max_bytes:
            raise WorkerError(f"input is {size} bytes, over the limit of {max_bytes}")
        return location.path
    if location.s3 is not None:
        if location.is_directory:
            raise invalid(location.field, f"{location.s3} names a prefix; give an object's key")
        assert location.sandbox.s3 is not None  # parse_location refuses s3:// without it
        s3.download(
            location.sandbox.s3, location.s3, dest, field=location.field, max_bytes=max_bytes,
            timeout_seconds=location.sandbox.transfer_timeout_seconds, on_progress=on_progress,
        )  # fmt: skip
        return dest
    what = f"downloading {redact(location.url)}"
    with _deadline(location, what) as deadline:
        connection, response = _get(location, what, deadline)
        try:
            length = response.getheader("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > max_bytes:
                raise WorkerError(
                    f"input {redact(location.url)} is {total} bytes, over the limit of "
                    f"{max_bytes} (VIDEOQUEUE_MAX_INPUT_BYTES)"
                )
            done = 0
            with dest.open("wb") as out:
                # read1: whatever has arrived, so the deadline is looked at between chunks.
                while not deadline.expired and (chunk := response.read1(CHUNK_BYTES)):
                    done += len(chunk)
                    if done > max_bytes:
                        raise WorkerError(
                            f"input {redact(location.url)} is over the limit of {max_bytes} "
                            "bytes (VIDEOQUEUE_MAX_INPUT_BYTES)"
                        )
                    out.write(chunk)
                    on_progress(done, total)
            if not deadline.expired and total is not None and done < total:
                raise WorkerError(f"{what}: the connection closed after {done} of {total} bytes")
        finally:
            connection.close()
    return dest


def _get(
    location: Location, what: str, deadline: _Deadline
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET the location, following redirects here, each hop's host checked by the sandbox.
    Returns the open connection and its 2xx response."""
    url = location.url
    for _ in range(MAX_REDIRECTS + 1):
        endpoint = http_endpoint(url, field=location.field)
        connection = _connection(
            endpoint, field=location.field, sandbox=location.sandbox, deadline=deadline
        )
        try:
            connection.request(
                "GET",
                endpoint.target,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )
            response = connection.getresponse()
        except BaseException:
            connection.close()
            raise
        if 200 <= response.status < 300:
            return connection, response
        connection.close()
        if response.status not in REDIRECT_STATUSES:
            raise WorkerError(f"{what}: HTTP {response.status} {response.reason}")
        target = response.getheader("Location")
        if not target:
            raise WorkerError(f"{what}: HTTP {response.status} without a Location to follow")
        url = urllib.parse.urljoin(url, target.strip())
        if urllib.parse.urlsplit(url).scheme.lower() not in HTTP_SCHEMES:
            raise invalid(
                location.field, f"redirected to {redact(url)}, which is not http(s); refusing"
            )
    raise WorkerError(f"{what}: more than {MAX_REDIRECTS} redirects")


# -- output --------------------------------------------------------------------------------


def partial_path(target: Path) -> Path:
    """Where to write the output before it is renamed to target: next to it (no copy of a
    large file), under a name nobody can guess. Made by `create_partial`."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")


def create_partial(partial: Path) -> None:
    """Make the partial file, new and empty: never an existing file, never through a symlink
    someone planted there."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.close(fd)


def put_in_place(partial: Path, location: Location) -> None:
    """Rename a finished partial file to the location's path. A rename replaces a symlink
    there rather than writing through it."""
    assert location.path is not None
    location.sandbox.still_inside(location.path.parent, field=location.field)
    partial.replace(location.path)  # readers never see half a file


def deliver(source: Path, location: Location, *, on_progress: Progress) -> None:
    """Put a local file at the output location: copy for file://, an S3 upload for s3://,
    HTTP PUT otherwise."""
    total = source.stat().st_size
    if location.path is not None:
        partial = partial_path(location.path)
        try:
            create_partial(partial)
            try:
                shutil.copyfile(source, partial)
                put_in_place(partial, location)
            finally:
                partial.unlink(missing_ok=True)  # gone already after the rename
        except OSError as exc:
            raise WorkerError(f"writing {location.path}: {exc.strerror or exc}") from None
        on_progress(total, total)
        return
    if location.s3 is not None:
        assert location.sandbox.s3 is not None
        s3.upload(
            location.sandbox.s3, source, location.s3, field=location.field,
            timeout_seconds=location.sandbox.transfer_timeout_seconds, on_progress=on_progress,
        )  # fmt: skip
        return
    _put(source, location, total, on_progress)


def _put(source: Path, location: Location, total: int, on_progress: Progress) -> None:
    """One HTTP PUT of the file. A server may answer before it read the body (an object
    store refusing a bad signature answers 403 at once and closes): the send then breaks,
    and the answer already on the wire is what the error reports."""
    endpoint = http_endpoint(location.url, field=location.field)
    where = f"uploading to {redact(location.url)}"
    with _deadline(location, where) as deadline:
        connection = _connection(
            endpoint, field=location.field, sandbox=location.sandbox, deadline=deadline
        )
        try:
            send_error: OSError | None = None
            try:
                connection.putrequest("PUT", endpoint.target, skip_accept_encoding=True)
                connection.putheader("User-Agent", USER_AGENT)
                connection.putheader("Content-Length", str(total))
                connection.putheader("Content-Type", "application/octet-stream")
                connection.endheaders()
                with source.open("rb") as body:
                    reader = _CountingReader(body, total, on_progress)
                    while not deadline.expired and (chunk := reader.read()):
                        connection.send(chunk)
            except (BrokenPipeError, ConnectionResetError) as exc:
                if deadline.expired:
                    raise
                send_error = exc
            if deadline.expired:
                raise _timed_out(where, deadline)
            try:
                response = connection.getresponse()
                response.read()
            except (http.client.HTTPException, OSError) as exc:
                if deadline.expired:
                    raise
                raise WorkerError(f"{where}: {send_error or exc}") from None
            if not 200 <= response.status < 300:
                raise WorkerError(f"{where}: HTTP {response.status} {response.reason}")
            if send_error is not None:
                raise WorkerError(f"{where}: {send_error}")
        finally:
            connection.close()


class _CountingReader:
    """A file-like body that reports how much was sent."""

    def __init__(self, body: IO[bytes], total: int, on_progress: Progress) -> None:
        self._body = body
        self._total = total
        self._done = 0
        self._on_progress = on_progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._body.read(CHUNK_BYTES if size < 0 else size)
        self._done += len(chunk)
        self._on_progress(self._done, self._total)
        return chunk
