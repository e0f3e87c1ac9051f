"""Hostile URLs against the sandbox (Hypothesis): whatever the string (percent-encodings,
`..`, unicode dots, symlinks, IPv6 literals with mapped addresses and zone ids, decimal and
hex IPv4, user@host), a file:// URL never yields a path outside the roots, and an http(s)
URL never gets a connection to an internal address the queue did not allow.

The oracles are independent of the worker's code: for paths, the kernel (the inode a path
reaches, as `os.stat` follows it); for addresses, a table of internal networks written out
here. Nothing connects anywhere: `socket.create_connection` is replaced by a recorder, and
names resolve through a fake resolver (numeric forms through the system's numeric-only
parser, which makes no lookups).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.worker import harness  # noqa: F401  (puts the worker on sys.path)
from videoqueue_worker import transfer
from videoqueue_worker.errors import ExitCode, WorkerError
from videoqueue_worker.sandbox import AllowedHosts, Sandbox

PROPERTIES = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- paths ---------------------------------------------------------------------------------

SEGMENTS = [
    "..", ".", "", "%2e%2e", "%2E%2e", "%2e.", ".%2e", "%252e%252e", "..%2f..", "%2f",
    "%00", "\u2024\u2024", "\uff0e\uff0e", "\u3002\u3002", "..\\..", "....", "%c0%ae%c0%ae",
    "in", "in.mp4", "sub", "link-out", "link-file", "link-up", "loop", "outside", "secret",
    "out.mp4", ".partial", "~", "%7e", "/", "//", "%2f%2e%2e%2f",
]  # fmt: skip
segments = st.lists(st.sampled_from(SEGMENTS) | st.text(max_size=4), max_size=8)


class Files:
    """root/ (the file root): in.mp4, sub/, symlinks out (a dir, a file, `..`) and a loop;
    outside/secret beside it."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.outside = base / "outside"
        (self.root / "sub").mkdir(parents=True)
        self.outside.mkdir()
        (self.root / "in.mp4").write_bytes(b"in")
        (self.outside / "secret").write_bytes(b"secret")
        (self.root / "link-out").symlink_to(self.outside)
        (self.root / "link-file").symlink_to(self.outside / "secret")
        (self.root / "sub" / "link-up").symlink_to("../..")
        (self.root / "loop").symlink_to("loop")
        self.inside = {os.lstat(self.root).st_ino}
        for directory, names, files in os.walk(self.root):
            self.inside |= {os.lstat(Path(directory) / n).st_ino for n in names + files}


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    base = Path(tempfile.mkdtemp(prefix="vq-sandbox-"))
    try:
        yield Files(base)
    finally:
        shutil.rmtree(base)


def _reached(path: Path) -> int:
    """The inode the kernel reaches for path, or for the nearest ancestor that exists (where
    a new file would be made)."""
    for candidate in [path, *path.parents]:
        try:
            return os.stat(candidate).st_ino
        except OSError:
            continue
    raise AssertionError("not even / exists")


@PROPERTIES
@given(parts=segments, form=st.sampled_from(["file://{}", "file://localhost{}", "{}"]))
@example(parts=["..", "outside", "secret"], form="file://{}")
@example(parts=["%2e%2e", "outside", "secret"], form="file://{}")
@example(parts=["sub", "link-up", "outside", "secret"], form="{}")
@example(parts=["link-out", "secret"], form="file://{}")
@example(parts=["loop", "..", "..", "outside", "secret"], form="file://{}")
@example(parts=["loop", "..", "link-out", "secret"], form="file://{}")  # found by Hypothesis
def test_a_file_url_never_reaches_outside_the_roots(
    files: Files, parts: list[str], form: str
) -> None:
    sandbox = Sandbox(file_roots=(files.root.resolve(),))
    url = form.format(str(files.root) + "/" + "/".join(parts))
    for field, schemes in (("spec.input.url", ("file",)), ("spec.output.url", ("file",))):
        refused: WorkerError | None
        try:
            location = transfer.parse_location(url, field=field, allowed=schemes, sandbox=sandbox)
        except WorkerError as error:
            refused = error
        else:
            refused = None
        if refused is not None:
            assert refused.exit_code == ExitCode.INVALID
            assert str(refused).startswith(f"{field}: ")
            continue
        assert location.path is not None
        assert location.path.is_relative_to(files.root.resolve())
        assert _reached(location.path) in files.inside, (url, location.path)
        if location.path.exists():
            assert location.path.resolve() == location.path  # no symlink left to follow


# -- addresses -----------------------------------------------------------------------------

INTERNAL = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
        "240.0.0.0/4", "::/128", "::1/128", "fe80::/10", "fec0::/10", "fc00::/7", "ff00::/8",
    )
]  # fmt: skip
"""The oracle's own list of what must never be reached without an allow entry."""


def _carried(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: mapped, 6to4, NAT64."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def _internal(text: str) -> bool:
    address = ipaddress.ip_address(text.partition("%")[0])
    carried = _carried(address)
    if carried is not None:
        return _internal(str(carried))
    return any(address in network for network in INTERNAL)


ADDRESSES = [
    "127.0.0.1", "127.8.9.10", "169.254.169.254", "10.0.0.1", "172.16.5.4", "192.168.0.1",
    "100.64.1.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
    "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::1", "ff02::1", "93.184.216.34", "1.1.1.1", "2606:4700::1111",
]  # fmt: skip
NAMES = ["media.example", "cdn.example.com", "media.internal", "a.svc.cluster.local"]
HOSTS = [
    *NAMES, "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.1", "017700000001",
    "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[fe80::1%25eth0]", "[fe80::1%eth0]",
    "[0:0:0:0:0:ffff:169.254.169.254]", "[64:ff9b::169.254.169.254]", "169.254.169.254",
    "169.254.169.254.", "127\u30020\u30020\u30021", "127\uff0e0\uff0e0\uff0e1",
    "127\u20240\u20240\u20241", "\uff11\uff12\uff17.0.0.1", "%31%32%37.0.0.1",
    "alice:s3cret@127.0.0.1", "media.example@169.254.169.254", "169.254.169.254#@media.example",
    "media.example\\@169.254.169.254", "[::1]@media.example", "MEDIA.EXAMPLE.",
    "media.example:80@10.0.0.1", "xn--nxasmq6b", "10.0.0.1%2f.media.example",
]  # fmt: skip
ALLOW_LISTS = [
    [], ["media.internal"], ["*.svc.cluster.local"], ["10.0.0.0/8"], ["127.0.0.1"],
    ["169.254.169.254"], ["fe80::/10"],
]  # fmt: skip


def _host_strings() -> st.SearchStrategy[str]:
    return st.sampled_from(HOSTS) | st.builds(
        lambda a, b: a + b, st.sampled_from(HOSTS), st.sampled_from(["", ".", ":8080", ":0"])
    )


@st.composite
def hostile_urls(draw: st.DrawFn) -> tuple[str, list[list[str]], list[str]]:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "hTtPs"]))
    host = draw(_host_strings())
    path = draw(st.sampled_from(["/v.mp4", "/../../etc/passwd", "/%2e%2e/x", "", "?q=1"]))
    # A name answers differently each time it is asked (DNS rebinding), with mixed answers.
    answers = draw(
        st.lists(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3), min_size=1)
    )
    allowed = draw(st.sampled_from(ALLOW_LISTS))
    return f"{scheme}://{host}{path}", answers, allowed


def _allowed(entries: list[str], host: str, address: str) -> bool:
    """The oracle's reading of an allow list: names are only ever plain ASCII here."""
    plain = ipaddress.ip_address(address.partition("%")[0])
    for entry in entries:
        if "/" in entry or entry[0].isdigit() or ":" in entry:
            network = ipaddress.ip_network(entry)
            carried = _carried(plain)
            if plain in network or (carried is not None and carried in network):
                return True
        elif (entry.startswith("*.") and host.endswith(entry[1:])) or host == entry:
            return True
    return False


_real_getaddrinfo = socket.getaddrinfo


def _numeric(host: str, port: int) -> list[str]:
    infos = _real_getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    return [str(info[4][0]) for info in infos]


@PROPERTIES
@given(case=hostile_urls())
@example(case=("http://169.254.169.254/latest/meta-data/", [["1.1.1.1"]], []))
@example(case=("http://2130706433/", [["1.1.1.1"]], []))
@example(case=("http://[::ffff:127.0.0.1]/", [["1.1.1.1"]], ["10.0.0.0/8"]))
@example(case=("http://media.example/", [["1.1.1.1"], ["169.254.169.254"]], []))
@example(case=("http://media.example/", [["1.1.1.1", "10.0.0.1"]], []))
def test_no_connection_to_an_internal_address_without_an_allow_entry(
    case: tuple[str, list[list[str]], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answers, allowed = case
    remaining = iter(answers)
    last = answers[-1]
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        try:
            return _numeric(host, port)  # 2130706433, 0x7f.1, ...: no lookup
        except socket.gaierror:
            return next(remaining, last)

    connects: list[tuple[str, str]] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        connects.append((asked[-1] if asked else "", address[0]))
        raise ConnectionRefusedError("test: recorded, not connected")

    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the worker must not look names up but through its resolver")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    sandbox = Sandbox(
        file_roots=(Path("/nonexistent"),),
        allowed_hosts=AllowedHosts.parse(allowed),
        transfer_timeout_seconds=5,
        resolve=resolve,
    )
    failure: WorkerError | None = None
    try:
        location = transfer.parse_location(
            url, field="spec.input.url", allowed=transfer.INPUT_SCHEMES, sandbox=sandbox
        )
        transfer.fetch(location, Path("/nonexistent/in"), max_bytes=1, on_progress=_ignore)
    except WorkerError as error:
        failure = error
    assert failure is not None, f"{url}: fetched, though nothing can be connected to"
    if failure.exit_code == ExitCode.INVALID:
        assert connects == [], (url, connects)
    netloc = url.partition("://")[2].partition("/")[0].partition("?")[0].partition("#")[0]
    userinfo = netloc.rpartition("@")[0]
    assert not userinfo or userinfo not in str(failure), str(failure)  # never echoed
    for host, address in connects:
        assert not _internal(address) or _allowed(allowed, host, address), (url, host, address)
    # Connections go only to what the last lookup answered: nothing asked twice per hop.
    assert len(asked) <= 1


def _ignore(done: int, total: int | None) -> None:
    pass


@PROPERTIES
@given(address=st.ip_addresses())
def test_every_address_the_oracle_calls_internal_is_refused(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    sandbox = Sandbox(file_roots=(), resolve=lambda host, port: [str(address)])
    if not _internal(str(address)):
        return
    with pytest.raises(WorkerError) as refused:
        sandbox.check_host("media.example", 443, field="spec.input.url")
    assert refused.value.exit_code == ExitCode.INVALID
    assert "spec.worker.allowedHosts" in str(refused.value)
