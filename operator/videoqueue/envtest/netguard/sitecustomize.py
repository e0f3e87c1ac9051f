"""Loaded by every worker process the tests and the worker benchmark start (`worker_env` in
videoqueue.envtest.worker puts this directory first on PYTHONPATH): with
VIDEOQUEUE_TEST_NETGUARD set, the process may connect to loopback and unix sockets only, and
resolves names from VIDEOQUEUE_TEST_DNS alone, so a worker that wrongly tried a link-local,
private or public address, or a real DNS lookup, fails here instead of
sending anything off the machine.

VIDEOQUEUE_TEST_DNS: JSON {name: [answer, ...]}, each answer a list of addresses; a name's
answers are given in turn, the last one repeated (so a test can rebind a name).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from typing import Any

_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect


def _numeric(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return False
    return True


def _install(answers: dict[str, list[list[str]]]) -> None:
    asked: dict[str, int] = {}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or _numeric(name):
            return _real_getaddrinfo(host, port, *args, **kwargs)
        if name not in answers:
            # inet_aton forms (2130706433, 0x7f.1) are numbers to the system resolver too.
            flags = socket.AI_NUMERICHOST
            try:
                return _real_getaddrinfo(name, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, flags)
            except socket.gaierror:
                raise socket.gaierror(
                    socket.EAI_NONAME, f"netguard: no test answer for {name}"
                ) from None
        turn = asked.get(name, 0)
        asked[name] = turn + 1
        answer = answers[name][min(turn, len(answers[name]) - 1)]
        result = []
        for address in answer:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr: tuple[Any, ...] = (address, int(port or 0))
            if family == socket.AF_INET6:
                sockaddr += (0, 0)
            result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return result

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0]).partition("%")[0]
            if not ipaddress.ip_address(host).is_loopback:
                raise ConnectionRefusedError(f"netguard: refusing to connect to {host}")
        _real_connect(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign,assignment]


if os.environ.get("VIDEOQUEUE_TEST_NETGUARD"):
    _install(json.loads(os.environ.get("VIDEOQUEUE_TEST_DNS") or "{}"))
