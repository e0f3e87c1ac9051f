"""A real S3 server for tests: SeaweedFS's `weed server` (master, volume server, filer and S3
gateway in one process, built by hack/build-toolchain.sh) on free ports of one address, with
its data in a temporary directory and access keys from an S3 identity config.

    with S3Server(tmp_path) as s3:
        s3.create_bucket("media")
        boto = s3.client()             # the admin identity
        s3.endpoint                    # http://127.0.0.1:PORT

Identities: `admin` may do everything; `reader` may only read and list (for denied-access
tests). Keys are random per server. Nothing leaves the address it listens on (SeaweedFS's
telemetry is switched off).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from videoqueue.envtest.binaries import find_optional
from videoqueue.envtest.wait import end_process

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

START_TIMEOUT_SECONDS = 60.0
REGION = "us-east-1"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def write_secret_dir(self, directory: Path) -> Path:
        """The files a mounted Kubernetes Secret with keys accessKeyId and secretAccessKey
        would give the worker."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "accessKeyId").write_text(self.access_key_id)
        (directory / "secretAccessKey").write_text(self.secret_access_key)
        return directory


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _new_credentials() -> Credentials:
    return Credentials(
        access_key_id="VQ" + secrets.token_hex(9).upper(), secret_access_key=secrets.token_hex(20)
    )


class S3Server:
    def __init__(self, workdir: Path | None = None, *, host: str = "127.0.0.1") -> None:
        """`workdir`: where data and logs go (a new temporary directory, removed on stop, when
        None). `host`: the one address every listener binds, e.g. a real node's pod bridge
        address for worker pods to reach."""
        self.binary = find_optional("weed")
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="vq-s3-")) if workdir is None else workdir
        self.host = host
        self.admin = _new_credentials()
        self.reader = _new_credentials()
        self.port = _free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def _identity_config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [
                        {
                            "accessKey": self.admin.access_key_id,
                            "secretKey": self.admin.secret_access_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                {
                    "name": "reader",
                    "credentials": [
                        {
                            "accessKey": self.reader.access_key_id,
                            "secretKey": self.reader.secret_access_key,
                        }
                    ],
                    "actions": ["Read", "List"],
                },
            ]
        }
        path = self.workdir / "s3-identities.json"
        path.write_text(json.dumps(config, indent=1))
        path.chmod(0o600)
        return path

    def client(self, credentials: Credentials | None = None) -> S3Client:
        """A boto3 client of this server (the admin's keys unless others are given)."""
        import boto3.session
        from botocore.config import Config

        keys = credentials or self.admin
        session = boto3.session.Session(
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            region_name=REGION,
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> Self:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"weed is already running on {self.endpoint}")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        ports = {name: _free_port(self.host) for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port.grpc",
        )}  # fmt: skip
        # Each bucket is a collection of its own, for which the master grows 7 volumes at
        # once by default: with many test buckets that would run into the volume limit.
        (self.workdir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        args = [
            str(self.binary),
            f"-config_dir={self.workdir}",
            "server",
            f"-dir={data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            *(f"-{name}={port}" for name, port in ports.items()),
            "-master.telemetry=false",
            # Small volumes: a test writes megabytes, not the default 30 GB per volume.
            "-master.volumeSizeLimitMB=512",
            "-volume.max=0",
            "-filer",
            "-s3",
            f"-s3.port={self.port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._identity_config()}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the gateway answers a signed request; the filer behind it comes up after the
        S3 port opens, so an open port is not enough."""
        from botocore.exceptions import BotoCoreError, ClientError

        assert self.process is not None
        probe = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe.list_buckets()
                return
            except (BotoCoreError, ClientError) as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"weed's S3 gateway did not answer on {self.endpoint} within "
                        f"{timeout:.0f}s ({exc}); its log:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.2)

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        end_process(self.process, grace=15)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
