"""Getting the input and delivering the output: file:// and http(s):// only.

Downloads stream into the attempt's work dir with a size limit; uploads are one HTTP PUT of
the file (what presigned object-store URLs expect). Redirects are followed to http(s) only.
"""

from __future__ import annotations

import http.client
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Final

from videoqueue_worker.errors import WorkerError, invalid

INPUT_SCHEMES: Final = ("file", "http", "https")
OUTPUT_SCHEMES: Final = ("file", "http", "https")
CHUNK_BYTES: Final = 1 << 20
HTTP_TIMEOUT_SECONDS: Final = 60.0

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes if known)."""


@dataclass(frozen=True)
class Location:
    """A checked input or output URL."""

    url: str
    scheme: str
    path: Path | None
    """The local path of a file:// URL."""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def is_directory(self) -> bool:
        """An output URL ending in '/' names a directory (or prefix); the file name is added."""
        return self.url.endswith("/")

    def child(self, name: str) -> Location:
        return parse_location(self.url + urllib.parse.quote(name), field="", allowed=(self.scheme,))


def parse_location(url: str, *, field: str, allowed: tuple[str, ...]) -> Location:
    """Check a URL against the allowed schemes. A bare absolute path counts as file://."""
    if url.startswith("/"):
        url = "file://" + url
    parts = urllib.parse.urlsplit(url)
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
        path = urllib.parse.unquote(parts.path)
        if not path.startswith("/"):
            raise invalid(field, "a file:// URL needs an absolute path, e.g. file:///data/in.mp4")
        return Location(url=url, scheme=scheme, path=Path(path))
    if not parts.hostname:
        raise invalid(field, f"{scheme}:// URL without a host")
    return Location(url=url, scheme=scheme, path=None)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise WorkerError(f"redirected to {newurl!r}, which is not http(s); refusing")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_SafeRedirects)


def redact(url: str) -> str:
    # Presigned URLs carry credentials in the query string; never echo them into status.
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # user:password@ goes too
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def fetch(location: Location, dest: Path, *, max_bytes: int, on_progress: Progress) -> Path:
    """The input as a local file: a file:// path as it is, an http(s) URL downloaded to dest."""
    if location.path is not None:
        if not location.path.is_file():
            raise WorkerError(f"input file {location.path} does not exist or is not a file")
        size = location.path.stat().st_size
        if size > max_bytes:
            raise WorkerError(f"input is {size} bytes, over the limit of {max_bytes}")
        return location.path
    try:
        with _opener.open(location.url, timeout=HTTP_TIMEOUT_SECONDS) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > max_bytes:
                raise WorkerError(
                    f"input {redact(location.url)} is {total} bytes, over the limit of "
                    f"{max_bytes} (VIDEOQUEUE_MAX_INPUT_BYTES)"
                )
            done = 0
            with dest.open("wb") as out:
                while chunk := response.read(CHUNK_BYTES):
                    done += len(chunk)
                    if done > max_bytes:
                        raise WorkerError(
                            f"input {redact(location.url)} is over the limit of {max_bytes} "
                            "bytes (VIDEOQUEUE_MAX_INPUT_BYTES)"
                        )
                    out.write(chunk)
                    on_progress(done, total)
    except urllib.error.HTTPError as exc:
        raise WorkerError(
            f"downloading {redact(location.url)}: HTTP {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WorkerError(f"downloading {redact(location.url)}: {reason}") from None
    return dest


def deliver(source: Path, location: Location, *, on_progress: Progress) -> None:
    """Put a local file at the output location: copy for file://, HTTP PUT otherwise."""
    total = source.stat().st_size
    if location.path is not None:
        try:
            location.path.parent.mkdir(parents=True, exist_ok=True)
            partial = location.path.with_name(f".{location.path.name}.partial")
            shutil.copyfile(source, partial)
            partial.replace(location.path)  # readers never see half a file
        except OSError as exc:
            raise WorkerError(f"writing {location.path}: {exc.strerror or exc}") from None
        on_progress(total, total)
        return
    _put(source, location, total, on_progress)


def _put(source: Path, location: Location, total: int, on_progress: Progress) -> None:
    """One HTTP PUT of the file. A server may answer before it read the body (an object
    store refusing a bad signature answers 403 at once and closes): the send then breaks,
    and the answer already on the wire is what the error reports."""
    parts = urllib.parse.urlsplit(location.url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.netloc, timeout=HTTP_TIMEOUT_SECONDS)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    where = f"uploading to {redact(location.url)}"
    try:
        send_error: OSError | None = None
        try:
            connection.putrequest("PUT", target)
            connection.putheader("Content-Length", str(total))
            connection.putheader("Content-Type", "application/octet-stream")
            connection.endheaders()
            with source.open("rb") as body:
                reader = _CountingReader(body, total, on_progress)
                while chunk := reader.read():
                    connection.send(chunk)
        except (BrokenPipeError, ConnectionResetError) as exc:
            send_error = exc
        try:
            response = connection.getresponse()
            response.read()
        except (http.client.HTTPException, OSError) as exc:
            raise WorkerError(f"{where}: {send_error or exc}") from None
        if not 200 <= response.status < 300:
            raise WorkerError(f"{where}: HTTP {response.status} {response.reason}")
        if send_error is not None:
            raise WorkerError(f"{where}: {send_error}")
    except OSError as exc:
        raise WorkerError(f"{where}: {exc.strerror or exc}") from None
    finally:
        connection.close()


class _CountingReader:
    """A file-like body for urllib that reports how much was sent."""

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
