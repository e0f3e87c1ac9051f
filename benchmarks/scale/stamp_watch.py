"""Stamp a watch stream's lines with their arrival time, in a process of its own.

    python stamp_watch.py KUBECTL KUBECONFIG PATH OUT

Runs `kubectl get --raw PATH?watch=1...` and appends "<unix time> <event line>" to OUT for
each event. The API server closes a watch whose reader falls behind by a few dozen events
("unresponsive"); a reader thread inside the benchmark, waiting for the interpreter lock
while the benchmark creates objects, fell behind that often, and every new watch replayed
every object. Here nothing else competes for this process, and a closed watch resumes from
the last resourceVersion seen (a full replay only when that version is too old), and one
that could not connect is tried again every half second.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time

_VERSION = re.compile(rb'"resourceVersion":"(\d+)"')


def main(kubectl: str, kubeconfig: str, path: str, out_path: str) -> None:
    version = ""
    with open(out_path, "ab", buffering=0) as out:
        while True:
            query = "watch=1&allowWatchBookmarks=true&timeoutSeconds=3600"
            if version:
                query += f"&resourceVersion={version}"
            argv = [kubectl, f"--kubeconfig={kubeconfig}", "get", "--raw", f"{path}?{query}"]
            process = subprocess.Popen(argv, stdout=subprocess.PIPE)
            assert process.stdout is not None
            lines = 0
            for line in process.stdout:
                if not line.endswith(b"\n"):
                    break  # cut off (the API server went away): the resumed watch resends it
                lines += 1
                out.write(b"%.6f %s" % (time.time(), line))
                if line.startswith(b'{"type":"ERROR"'):
                    version = ""  # e.g. 410 Expired: list everything again
                elif match := _VERSION.search(line):
                    version = match[1].decode()
            if process.wait() != 0 and not lines:
                time.sleep(0.5)  # the API server is down (the chaos benchmark restarts it)


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the benchmark that started this process dies (a
    benchmark stopped by a signal left its watchers retrying against a control plane that
    was gone, writing into the next run's log)."""
    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request was in place
        sys.exit(0)


if __name__ == "__main__":
    die_with_parent()
    main(*sys.argv[1:5])
