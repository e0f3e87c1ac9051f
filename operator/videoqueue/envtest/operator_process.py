"""Operator processes for tests and benchmarks: start, stop, SIGKILL, read their logs.

Each `OperatorProcess` is one `python -m videoqueue` with its own log file; `restart()` starts
a fresh process on the same log (a marker line separates the runs), as a kubelet restarts a
crashed container. Like a pod, each has a name of its own, its `identity` ($POD_ID: the
replica's name in peering, in the Lease and in the User-Agent of its requests), which stays
the same across restarts: a restarted operator takes its own Lease back at once.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from videoqueue.envtest.wait import end_process, poll

# kopf's log lines start with their local time: "[2026-11-23 12:03:11,679] ...".
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def free_port() -> int:
    """A TCP port free on loopback now (for an operator's --metrics-port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metrics_args(port: int) -> list[str]:
    """Serve the operator's metrics and probes on loopback: tests run several operators on
    one machine, so the default 0.0.0.0:8080 would collide."""
    return ["--metrics-bind", "127.0.0.1", "--metrics-port", str(port)]


def line_time(line: str) -> float:
    """When an operator log line was written (time.time() scale)."""
    match = _STAMP.match(line)
    if match is None:
        raise ValueError(f"no timestamp in log line {line!r}")
    return datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        args: Sequence[str] = (),
        *,
        name: str = "operator",
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = list(args)
        self.name = name
        self.env = env or {}
        self.identity = self.env.get("POD_ID") or f"{name}-{secrets.token_hex(3)}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at: float | None = None  # time.time() of the last start
        self.metrics_port: int | None = None  # of the last start, unless args set one

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "POD_ID": self.identity,
            **self.env,
        }
        metrics: list[str] = []
        if "--metrics-port" not in self.args:
            self.metrics_port = free_port()
            metrics = metrics_args(self.metrics_port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== {self.name} start #{self.starts} ===\n".encode())
            log.flush()
            self.started_at = time.time()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "videoqueue", *self.args, *metrics],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> float:
        """SIGKILL: no cleanup, no goodbye to peers. Returns when it died (time.time())."""
        process = self._require()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        return time.time()

    def suspend(self) -> float:
        """SIGSTOP: frozen as by a long GC pause or a stalled VM. Returns time.time()."""
        self._require().send_signal(signal.SIGSTOP)
        return time.time()

    def resume(self) -> float:
        """SIGCONT after `suspend`. Returns time.time()."""
        self._require().send_signal(signal.SIGCONT)
        return time.time()

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit status."""
        return self._require_started().wait(timeout=timeout)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM and wait (kopf's graceful exit); SIGKILL after `timeout`."""
        end_process(self.process, timeout)

    def restart(self) -> Self:
        if self.alive:
            self.kill()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is not None or os.environ.get("VIDEOQUEUE_SHOW_OPERATOR_LOG"):
            print(f"\n--- {self.name} log ({self.log_path}) ---\n{self.log()}", file=sys.stderr)

    # -- state ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process

    def _require(self) -> subprocess.Popen[bytes]:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process

    # -- logs -----------------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def current_log(self) -> str:
        """The log of the current (last started) run only."""
        text = self.log()
        marker = f"=== {self.name} start #{self.starts} ==="
        return text[text.rfind(marker) :] if marker in text else text

    def wait_for_log(self, pattern: str, *, timeout: float, current: bool = True) -> str:
        """Wait until the log (of the current run, by default) has a line matching the
        regular expression `pattern`; return that line. Fails early if the process died."""
        regex = re.compile(pattern)

        def probe() -> str | None:
            text = self.current_log() if current else self.log()
            found = next((line for line in text.splitlines() if regex.search(line)), None)
            if found is None and not self.alive:
                raise AssertionError(f"{self.name} exited while waiting for {pattern!r}:\n{text}")
            return found

        return poll(probe, timeout=timeout, what=f"{self.name} to log {pattern!r}", interval=0.1)

    def log_lines(self, pattern: str, *, current: bool = False) -> list[str]:
        regex = re.compile(pattern)
        text = self.current_log() if current else self.log()
        return [line for line in text.splitlines() if regex.search(line)]
