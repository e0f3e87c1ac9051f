"""The worker's sandbox, end to end through the worker process: local paths stay inside the
queue's file roots, internal addresses are refused unless the queue allows them (every
redirect hop too), and a download is bounded in time.

Workers started here connect to loopback only and resolve names from the test's table
(videoqueue/envtest/netguard): a refusal that failed would be a refused connection here, never
traffic to a metadata service or a real DNS lookup. A few tests run the transfer code in
this process instead, with the resolver and `socket.create_connection` replaced.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import http.server
import ipaddress
import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.worker.harness import run_worker
from videoqueue.envtest.worker import job_payload
from videoqueue_worker import transfer
from videoqueue_worker.errors import ExitCode, WorkerError
from videoqueue_worker.runner import load_sandbox
from videoqueue_worker.sandbox import AllowedHosts, Sandbox

SECRET = b"root:x:0:0:do not overwrite me\n"


# -- local servers -------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    requests: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """GET serves `directory`; /redirect?to=URL answers 302 to URL; PUT stores the body."""

    server_record: Server

    def do_GET(self) -> None:
        self.server_record.requests.append(f"GET {self.path}")
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect?to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def do_PUT(self) -> None:
        self.server_record.requests.append(f"PUT {self.path}")
        length = int(self.headers["Content-Length"])
        self.server_record.uploads[self.path] = self.rfile.read(length)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(
    directory: Path, address: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None
) -> Iterator[Server]:
    record = Server(base="")
    handler = type("Handler", (_Handler,), {"server_record": record})
    server = http.server.ThreadingHTTPServer(
        (address, 0), functools.partial(handler, directory=str(directory))
    )
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    record.base = f"{'https' if tls else 'http'}://{address}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served(media: Path) -> Iterator[Server]:
    with serve(media.parent) as server:
        yield server


@pytest.fixture
def other(media: Path) -> Iterator[Server]:
    """A second loopback server on 127.0.0.2 (also loopback, so internal; not allowed by the
    harness's default of 127.0.0.1 alone)."""
    with serve(media.parent, "127.0.0.2") as server:
        yield server


# -- file roots ----------------------------------------------------------------------------


@dataclass
class Tree:
    root: Path
    outside: Path

    @property
    def env(self) -> dict[str, str]:
        return {"VIDEOQUEUE_FILE_ROOTS": json.dumps([str(self.root)])}

    def outside_untouched(self) -> bool:
        names = sorted(p.name for p in self.outside.iterdir())
        return (self.outside / "passwd").read_bytes() == SECRET and names == [
            "input.mp4",
            "passwd",
        ]


@pytest.fixture
def tree(media: Path, tmp_path: Path) -> Tree:
    """root/ (the only file root) with the input and symlinks out of it; outside/ beside it
    with a file the worker must never write and an input it must never read."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "out").mkdir(parents=True)
    outside.mkdir()
    shutil.copyfile(media, root / "input.mp4")
    shutil.copyfile(media, outside / "input.mp4")
    (outside / "passwd").write_bytes(SECRET)
    (root / "link-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-file.mp4").symlink_to(outside / "input.mp4")
    (root / "out" / "link-passwd").symlink_to(outside / "passwd")
    (root / "out" / "dangling").symlink_to(outside / "new-file")
    (root / "alias.mp4").symlink_to(root / "input.mp4")  # inside: fine
    (root / "loop").symlink_to("loop")
    return Tree(root, outside)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/out/../../outside/passwd", id="dot-dot"),
        pytest.param("/%2e%2e/outside/passwd", id="percent-encoded-dots"),
        pytest.param("/%2E%2e/%2e%2E" * 8 + "/{tmp}/outside/passwd", id="mixed-case-encoding"),
        pytest.param("/out/..%2f..%2foutside/passwd", id="encoded-slash"),
        pytest.param("/link-dir/passwd", id="symlinked-directory"),
        pytest.param("/out/link-passwd", id="symlink-as-the-file"),
        pytest.param("/out/dangling", id="dangling-symlink"),
    ],
)
def test_output_outside_the_roots_is_refused(tree: Tree, tmp_path: Path, path: str) -> None:
    url = f"file://{tree.root}{path.format(tmp=str(tmp_path)[1:])}"
    run = run_worker(job_payload("probe", f"file://{tree.root}/input.mp4", url), tmp_path, tree.env)
    assert run.code == ExitCode.INVALID, run.log
    assert run.message.startswith("spec.output.url: "), run.message
    assert f"outside the queue's file roots ({tree.root})" in run.message
    assert "spec.worker.fileRoots" in run.message
    assert tree.outside_untouched()
    assert not (tree.outside / "new-file").exists()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/../outside/input.mp4", id="dot-dot"),
        pytest.param("/%2e%2e/outside/input.mp4", id="percent-encoded-dots"),
        pytest.param("/link-dir/input.mp4", id="symlinked-directory"),
        pytest.param("/link-file.mp4", id="symlink-as-the-file"),
    ],
)
def test_input_outside_the_roots_is_refused(tree: Tree, tmp_path: Path, path: str) -> None:
    run = run_worker(job_payload("probe", f"file://{tree.root}{path}"), tmp_path, tree.env)
    assert run.code == ExitCode.INVALID, run.log
    assert run.message.startswith("spec.input.url: "), run.message
    assert "outside the queue's file roots" in run.message
    assert "formatName" not in run.message


def test_a_symlink_loop_cannot_hide_a_way_out(tree: Tree, tmp_path: Path) -> None:
    """`loop/..` stops path resolution at the loop; what follows (a symlink out) must not be
    taken as already resolved. Found by test_sandbox_properties."""
    url = f"file://{tree.root}/loop/../link-dir/input.mp4"
    run = run_worker(job_payload("probe", url), tmp_path, tree.env)
    assert run.code == ExitCode.INVALID, run.log
    assert run.message == f"spec.input.url: {url.removeprefix('file://')} has a symlink loop in it"


def test_symlinks_inside_the_roots_work(tree: Tree, tmp_path: Path) -> None:
    run = run_worker(
        job_payload("probe", f"file://{tree.root}/alias.mp4", f"file://{tree.root}/out/p.json"),
        tmp_path,
        tree.env,
    )
    assert run.code == 0, run.log
    assert json.loads((tree.root / "out" / "p.json").read_text())["format"]
    assert not (tree.root / "out" / "p.json").is_symlink()


def _playlist(path: Path, segment: str) -> None:
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{segment}\n#EXT-X-ENDLIST\n")


def test_a_playlist_cannot_make_ffmpeg_fetch_from_the_network(
    tree: Tree, tmp_path: Path, served: Server
) -> None:
    """ffmpeg runs outside the worker's own checks: an HLS playlist inside the roots naming
    a segment over HTTP must not make it connect anywhere (not even to an allowed host).
    Debian's ffmpeg 5.1 refuses this cross-protocol segment by itself as well; the worker's
    `-protocol_whitelist file` covers the demuxers that do not check."""
    _playlist(tree.root / "remote.m3u8", f"{served.base}/input.mp4")
    run = run_worker(job_payload("probe", f"file://{tree.root}/remote.m3u8"), tmp_path, tree.env)
    assert run.code != ExitCode.OK, run.log
    assert served.requests == []


def test_a_playlist_cannot_read_files_outside_the_roots(tree: Tree, tmp_path: Path) -> None:
    _playlist(tree.root / "local.m3u8", str(tree.outside / "input.mp4"))
    payload = job_payload(
        "transcode",
        f"file://{tree.root}/local.m3u8",
        f"file://{tree.root}/out/copy.mp4",
        {"preset": "h264-480p"},
    )
    run = run_worker(payload, tmp_path, tree.env)
    assert run.code == ExitCode.INVALID, run.log
    assert run.message.startswith("spec.input.url: the input is a hls playlist"), run.message
    assert not (tree.root / "out" / "copy.mp4").exists()


def test_a_nul_byte_in_a_path_is_refused(tree: Tree, tmp_path: Path) -> None:
    run = run_worker(
        job_payload("probe", f"file://{tree.root}/input.mp4%00.txt"), tmp_path, tree.env
    )
    assert run.code == ExitCode.INVALID, run.log
    assert run.message == "spec.input.url: the path contains a NUL byte"


def test_a_partial_file_is_never_written_through_a_planted_symlink(tree: Tree) -> None:
    """The worker makes its partial file itself, exclusively, under a name nobody guesses;
    the old fixed name (`.<name>.partial`) could be a symlink planted by someone else."""
    sandbox = Sandbox(file_roots=(tree.root,))
    target = transfer.parse_location(
        f"file://{tree.root}/out/o.json", field="spec.output.url", allowed=("file",),
        sandbox=sandbox,
    )  # fmt: skip
    (tree.root / "out" / ".o.json.partial").symlink_to(tree.outside / "passwd")
    source = tree.root / "input.mp4"
    transfer.deliver(source, target, on_progress=lambda done, total: None)
    assert (tree.root / "out" / "o.json").read_bytes() == source.read_bytes()
    assert tree.outside_untouched()
    assert sorted(p.name for p in (tree.root / "out").iterdir()) == [
        ".o.json.partial", "dangling", "link-passwd", "o.json",
    ]  # fmt: skip


def test_no_file_roots_means_no_local_files(tree: Tree, tmp_path: Path) -> None:
    run = run_worker(
        job_payload("probe", f"file://{tree.root}/input.mp4"),
        tmp_path,
        {"VIDEOQUEUE_FILE_ROOTS": "[]"},
    )
    assert run.code == ExitCode.INVALID
    assert "this queue allows no local files" in run.message


# -- addresses -----------------------------------------------------------------------------


NO_HOSTS = {"VIDEOQUEUE_ALLOWED_HOSTS": "[]"}
DNS = {
    "localhost": [["127.0.0.1"]],
    "metadata.google.internal": [["169.254.169.254"]],
    "mixed.example": [["93.184.216.34", "10.0.0.7"]],
}


def _dns(answers: dict[str, list[list[str]]]) -> dict[str, str]:
    return {"VIDEOQUEUE_TEST_DNS": json.dumps(answers)}


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        pytest.param("127.0.0.1:{port}", "loopback", id="loopback"),
        pytest.param("localhost:{port}", "resolves to 127.0.0.1, a loopback", id="localhost"),
        pytest.param("[::1]:{port}", "loopback", id="ipv6-loopback"),
        pytest.param("[::ffff:127.0.0.1]:{port}", "loopback (IPv4 127.0.0.1 inside", id="mapped"),
        pytest.param("2130706433:{port}", "resolves to 127.0.0.1", id="decimal"),
        pytest.param("0x7f.1:{port}", "resolves to 127.0.0.1", id="hex-short"),
        pytest.param("0.0.0.0:{port}", "unspecified", id="unspecified"),
        pytest.param("169.254.169.254", "link-local (cloud metadata)", id="metadata"),
        pytest.param("metadata.google.internal", "link-local (cloud metadata)", id="metadata-name"),
        pytest.param("[fe80::1%25eth0]", "link-local", id="ipv6-zone"),
        pytest.param("10.1.2.3", "private", id="private"),
        pytest.param("192.168.1.1", "private", id="private-192"),
        pytest.param("100.64.0.1", "carrier-grade NAT", id="cgnat"),
        pytest.param("[fd00:ec2::254]", "private", id="ipv6-ula"),
        pytest.param("mixed.example", "resolves to 10.0.0.7, a private", id="one-of-many"),
    ],
)
def test_internal_inputs_are_refused(tmp_path: Path, served: Server, host: str, kind: str) -> None:
    port = served.base.rpartition(":")[2]
    url = f"http://{host.format(port=port)}/input.mp4"
    run = run_worker(job_payload("probe", url), tmp_path, NO_HOSTS | _dns(DNS))
    assert run.code == ExitCode.INVALID, run.log
    assert run.message.startswith("spec.input.url: host "), run.message
    assert kind in run.message
    assert "spec.worker.allowedHosts" in run.message
    assert served.requests == []


def test_internal_outputs_are_refused_before_the_work(
    media: Path, tmp_path: Path, served: Server
) -> None:
    payload = job_payload(
        "transcode", f"file://{media}", f"{served.base}/out.mp4", {"preset": "h264-480p"}
    )
    run = run_worker(payload, tmp_path, NO_HOSTS)
    assert run.code == ExitCode.INVALID, run.log
    assert run.message.startswith("spec.output.url: host 127.0.0.1 is a loopback address")
    assert served.requests == []


def test_an_upload_is_checked_when_it_connects(media: Path, tmp_path: Path, served: Server) -> None:
    """Allowed when the job starts, a different address by the time of the upload: the
    upload resolves and checks again (a name that rebinds between the two)."""
    port = served.base.rpartition(":")[2]
    payload = job_payload("probe", f"file://{media}", f"http://up.example:{port}/p.json")
    answers = {"up.example": [["127.0.0.2"], ["127.0.0.1"]]}  # allowed, then not
    run = run_worker(
        payload, tmp_path, _dns(answers) | {"VIDEOQUEUE_ALLOWED_HOSTS": '["127.0.0.2"]'}
    )
    assert run.code == ExitCode.INVALID, run.log
    assert "spec.output.url: host up.example resolves to 127.0.0.1, a loopback" in run.message
    assert served.requests == []


@pytest.mark.parametrize(
    ("target", "words"),
    [
        pytest.param("{other}/input.mp4", "host 127.0.0.2 is a loopback", id="other-loopback"),
        pytest.param(
            "http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)",
            id="metadata",
        ),
        pytest.param("http://[::ffff:a9fe:a9fe]/", "link-local (cloud metadata)", id="mapped"),
        pytest.param("http://u:pw@{other_host}/input.mp4", "credentials", id="userinfo"),
        pytest.param("file:///etc/passwd", "which is not http(s)", id="file-scheme"),
    ],
)  # fmt: skip
def test_a_redirect_to_a_forbidden_host_is_refused(
    tmp_path: Path, served: Server, other: Server, target: str, words: str
) -> None:
    """127.0.0.1 is allowed (the harness's default); where it redirects to is checked
    again."""
    to = target.format(other=other.base, other_host=other.base.removeprefix("http://"))
    run = run_worker(job_payload("probe", f"{served.base}/redirect?to={to}"), tmp_path)
    assert run.code == ExitCode.INVALID, run.log
    assert run.message.startswith("spec.input.url: "), run.message
    assert words in run.message
    assert "pw" not in run.message
    assert served.requests == [f"GET /redirect?to={to}"]
    assert other.requests == []


def test_a_name_that_rebinds_is_fetched_from_the_address_checked(
    tmp_path: Path, other: Server
) -> None:
    """The first answer (allowed) is checked and connected to; the worker never asks again,
    so the second answer (loopback 127.0.0.1, not allowed) is never used."""
    port = other.base.rpartition(":")[2]
    env = _dns({"media.example": [["127.0.0.2"], ["127.0.0.1"]]})
    env |= {"VIDEOQUEUE_ALLOWED_HOSTS": '["127.0.0.2"]'}
    run = run_worker(job_payload("probe", f"http://media.example:{port}/input.mp4"), tmp_path, env)
    assert run.code == 0, run.log
    assert other.requests == ["GET /input.mp4"]


def test_redirects_between_allowed_hosts_are_followed(
    tmp_path: Path, served: Server, other: Server
) -> None:
    hops = f"{served.base}/redirect?to={other.base}/input.mp4"
    run = run_worker(
        job_payload("probe", hops), tmp_path, {"VIDEOQUEUE_ALLOWED_HOSTS": '["127.0.0.0/8"]'}
    )
    assert run.code == 0, run.log
    assert other.requests == ["GET /input.mp4"]


def test_credentials_in_a_url_are_refused_and_never_echoed(tmp_path: Path, served: Server) -> None:
    url = served.base.replace("://", "://user:hunter2@") + "/input.mp4"
    run = run_worker(job_payload("probe", url), tmp_path)
    assert run.code == ExitCode.INVALID, run.log
    assert run.message.startswith("spec.input.url: ")
    assert "credentials (user@host)" in run.message
    assert "hunter2" not in run.message
    assert "hunter2" not in run.log
    assert served.requests == []


@pytest.mark.parametrize(
    ("allowed", "url_host", "code"),
    [
        pytest.param([], "media.internal", ExitCode.INVALID, id="nothing-allowed"),
        pytest.param(["media.internal"], "media.internal", ExitCode.OK, id="exact-name"),
        pytest.param(["MEDIA.internal."], "media.internal", ExitCode.OK, id="case-trailing-dot"),
        pytest.param(["*.internal"], "media.internal", ExitCode.OK, id="wildcard"),
        pytest.param(["*.internal"], "internal", ExitCode.INVALID, id="wildcard-not-apex"),
        pytest.param(["other.internal"], "media.internal", ExitCode.INVALID, id="other-name"),
        pytest.param(["127.0.0.2"], "media.internal", ExitCode.OK, id="ip"),
        pytest.param(["127.0.0.0/30"], "media.internal", ExitCode.OK, id="cidr"),
        pytest.param(["127.0.0.4/30"], "media.internal", ExitCode.INVALID, id="other-cidr"),
    ],
)
def test_the_allowed_list_lets_internal_hosts_through(
    tmp_path: Path, other: Server, allowed: list[str], url_host: str, code: ExitCode
) -> None:
    port = other.base.rpartition(":")[2]
    answers = {"media.internal": [["127.0.0.2"]], "internal": [["127.0.0.2"]]}
    env = _dns(answers) | {"VIDEOQUEUE_ALLOWED_HOSTS": json.dumps(allowed)}
    run = run_worker(job_payload("probe", f"http://{url_host}:{port}/input.mp4"), tmp_path, env)
    assert run.code == code, run.log
    assert other.requests == ([] if code else ["GET /input.mp4"])


def test_https_to_a_pinned_address_still_verifies_the_name(tmp_path: Path, media: Path) -> None:
    """The socket goes to the checked address, TLS to the host name: SNI and certificate
    checks as without pinning."""
    cert, key = _self_signed(tmp_path, "media.internal")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with serve(media.parent, tls=tls) as server:
        port = server.base.rpartition(":")[2]
        env = _dns({"media.internal": [["127.0.0.1"]], "wrong.internal": [["127.0.0.1"]]})
        env |= {"VIDEOQUEUE_ALLOWED_HOSTS": '["*.internal"]', "SSL_CERT_FILE": str(cert)}
        good = run_worker(
            job_payload("probe", f"https://media.internal:{port}/input.mp4"), tmp_path, env
        )
        wrong = run_worker(
            job_payload("probe", f"https://wrong.internal:{port}/input.mp4"), tmp_path, env
        )
    assert good.code == 0, good.log
    assert wrong.code == ExitCode.FAILED, wrong.log
    assert "certificate verify failed" in wrong.message
    assert server.requests == ["GET /input.mp4"]


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# -- DNS rebinding, in this process --------------------------------------------------------

PUBLIC = "93.184.216.34"
"""A public address the test pretends a name resolves to; nothing ever connects to it: the
connection is redirected to a local server by the fake `create_connection`."""


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process too: a connection anywhere but loopback fails instead of leaving."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0]).partition("%")[0]
            if not ipaddress.ip_address(host).is_loopback:
                raise ConnectionRefusedError(f"test: refusing to connect to {host}")
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.mark.usefixtures("loopback_only")
def test_the_connection_goes_to_the_address_that_was_checked(
    media: Path, tmp_path: Path, served: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that answers a public address once and the metadata address after: the one
    answer is checked and connected to; no second lookup happens (DNS rebinding)."""
    answers = iter([[PUBLIC]])
    lookups: list[str] = []
    connects: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers, ["169.254.169.254"])

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        # A connection by name (not to the checked address) would come here.
        if host != "media.example":
            raise socket.gaierror(socket.EAI_NONAME, f"test: no lookups of {host}")
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port)))
            for a in resolve(host, int(port))
        ]

    local_port = int(served.base.rpartition(":")[2])

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connects.append(address[0])
        if address[0] != PUBLIC:
            raise ConnectionRefusedError(f"test: not connecting to {address[0]}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", local_port))
        return sock

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    sandbox = Sandbox(file_roots=(tmp_path,), resolve=resolve)
    location = transfer.parse_location(
        "http://media.example/input.mp4", field="spec.input.url", allowed=("http",),
        sandbox=sandbox,
    )  # fmt: skip
    got = transfer.fetch(location, tmp_path / "in", max_bytes=1 << 30, on_progress=_ignore)
    assert got.read_bytes() == media.read_bytes()
    assert lookups == ["media.example"]
    assert connects == [PUBLIC]


@pytest.mark.usefixtures("loopback_only")
def test_a_public_looking_name_with_an_internal_address_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy decides on the resolved addresses, not on the URL's text: a public-looking
    name that resolves to the metadata address is refused, and nothing connects."""
    connects: list[Any] = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a))
    sandbox = Sandbox(file_roots=(tmp_path,), resolve=lambda host, port: ["169.254.169.254"])
    location = transfer.parse_location(
        "https://cdn.example.com/v.mp4", field="spec.input.url", allowed=("https",),
        sandbox=sandbox,
    )  # fmt: skip
    with pytest.raises(WorkerError) as refused:
        transfer.fetch(location, tmp_path / "in", max_bytes=1 << 30, on_progress=_ignore)
    assert refused.value.exit_code == ExitCode.INVALID
    assert "link-local (cloud metadata)" in str(refused.value)
    assert connects == []


def _ignore(done: int, total: int | None) -> None:
    pass


# -- time bound ----------------------------------------------------------------------------


class _Drip(http.server.BaseHTTPRequestHandler):
    """Sends a response one byte at a time, 20 per second, until the client goes away:
    the body (`/body`) or even the headers (`/headers`)."""

    stop: threading.Event

    def do_GET(self) -> None:
        if self.path == "/body":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            data = b"x" * 100_000
        else:
            data = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100_000
        with contextlib.suppress(OSError):
            for index in range(len(data)):
                if self.stop.wait(0.05):
                    return
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_slow_download_times_out(tmp_path: Path, part: str) -> None:
    stop = threading.Event()
    handler = type("Drip", (_Drip,), {"stop": stop})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{part}"
        started = time.monotonic()
        run = run_worker(
            job_payload("probe", url),
            tmp_path,
            {"VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS": "1"},
            timeout=60,
        )
        took = time.monotonic() - started
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join()
    assert run.code == ExitCode.FAILED, run.log
    assert run.message == (
        f"downloading {url}: took longer than 1s (VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS, "
        "the queue's spec.worker.downloadTimeoutSeconds)"
    )
    assert took < 20  # the worker's start-up plus the 1 s bound, not 100000 x 50 ms
    assert list((tmp_path / "work").iterdir()) == []


# -- settings ------------------------------------------------------------------------------


def test_settings_default_to_media_and_nothing_allowed() -> None:
    sandbox = load_sandbox({})
    assert sandbox.file_roots == (Path("/media").resolve(),)
    assert not sandbox.allowed_hosts
    assert sandbox.transfer_timeout_seconds == 3600


def test_settings_from_the_environment(tmp_path: Path) -> None:
    sandbox = load_sandbox(
        {
            "VIDEOQUEUE_FILE_ROOTS": json.dumps([str(tmp_path), "/data/../srv"]),
            "VIDEOQUEUE_ALLOWED_HOSTS": '["Media.Internal.", "*.svc.cluster.local", '
            '"10.0.0.0/8", "fd00::1", "[::1]"]',
            "VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS": "90",
        }
    )
    assert sandbox.file_roots == (tmp_path.resolve(), Path("/srv"))
    assert sandbox.allowed_hosts == AllowedHosts.parse(
        ["media.internal", "*.svc.cluster.local", "10.0.0.0/8", "fd00::1/128", "::1"]
    )
    assert sandbox.transfer_timeout_seconds == 90


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"VIDEOQUEUE_FILE_ROOTS": "/media"},
            "VIDEOQUEUE_FILE_ROOTS: must be a JSON list of strings",
            id="roots-not-json",
        ),
        pytest.param(
            {"VIDEOQUEUE_FILE_ROOTS": '["media"]'},
            "VIDEOQUEUE_FILE_ROOTS: 'media' is not an absolute path",
            id="roots-relative",
        ),
        pytest.param(
            {"VIDEOQUEUE_ALLOWED_HOSTS": '{"a": 1}'},
            "VIDEOQUEUE_ALLOWED_HOSTS: must be a JSON list of strings",
            id="hosts-not-a-list",
        ),
        pytest.param(
            {"VIDEOQUEUE_ALLOWED_HOSTS": '["bad host!"]'},
            "VIDEOQUEUE_ALLOWED_HOSTS: 'bad host!' is not a host name",
            id="hosts-bad-entry",
        ),
        pytest.param(
            {"VIDEOQUEUE_ALLOWED_HOSTS": '["10.0.0.0/33"]'},
            "VIDEOQUEUE_ALLOWED_HOSTS: '10.0.0.0/33' is not",
            id="hosts-bad-cidr",
        ),
        pytest.param(
            {"VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS": "0"},
            "VIDEOQUEUE_DOWNLOAD_TIMEOUT_SECONDS: must be a positive number",
            id="timeout-zero",
        ),
    ],
)
def test_malformed_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(WorkerError) as error:
        load_sandbox(env)
    assert error.value.exit_code == ExitCode.INVALID
    assert str(error.value).startswith(message), str(error.value)
