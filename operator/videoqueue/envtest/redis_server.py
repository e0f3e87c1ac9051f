"""A real redis-server on a free loopback port, for the progress channel's tests and the chaos
benchmark.

No persistence (nothing survives a stop, like a Redis restarted empty); `stop()` and
`start()` again keep the port, so clients configured with `url` reconnect to the new one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from videoqueue.envtest.wait import end_process


@dataclass(frozen=True)
class TlsFiles:
    """A serving certificate for 127.0.0.1, its key, and the CA that signed it (PEM files)."""

    cert: Path
    key: Path
    ca: Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        tls: TlsFiles | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """`host`: the address it listens on (only that one), e.g. a real node's pod bridge
        address for worker pods to reach."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; run hack/install-system-packages.sh "
                "(Debian package redis-server)"
            )
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.host = host
        self.port = free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        if self.tls is None:
            return redis.Redis(host=self.host, port=self.port, password=self.password)
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca),
        )

    def start(self, timeout: float = 10) -> Self:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            ports = ["--port", str(self.port)]
        else:  # TLS only; clients need not present a certificate
            ports = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        args = [
            self.binary,
            *ports,
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        elif self.host != "127.0.0.1":
            # Redis refuses non-loopback clients without a password unless told otherwise;
            # `host` is an address only this machine and its pods reach.
            args += ["--protected-mode", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as probe:
                    probe.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.workdir / "redis.log"
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}:\n"
                        + (log.read_text() if log.exists() else "")
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        end_process(self.process, grace=10)

    def kill(self) -> None:
        """SIGKILL: clients see their connections drop without a goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
