"""What a job may touch: local paths inside the queue's file roots, and network addresses that
are public unless the queue allows them.

- Paths (file:// inputs and outputs) are resolved, `..` and symlinks followed, and must land
  inside one of the file roots (VIDEOQUEUE_FILE_ROOTS, from `spec.worker.fileRoots`).
- Hosts (http(s) inputs, outputs and every redirect) are resolved once; every address must be
  public, or allowed by the queue (VIDEOQUEUE_ALLOWED_HOSTS, from `spec.worker.allowedHosts`:
  names, `*.domain` wildcards, IP addresses, CIDRs). The caller then connects to exactly the
  addresses checked here, so a second DNS answer (rebinding) is never asked for.

Pure policy: no connections here (those are in `transfer`). Refusals are `invalid` errors
naming the job's field, since a retry would be refused the same way.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from videoqueue_worker.errors import invalid

if TYPE_CHECKING:
    from videoqueue_worker.s3 import S3Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> the addresses to connect to, in order; raises OSError when it cannot."""

ROOTS_FIELD: Final = "spec.worker.fileRoots"
HOSTS_FIELD: Final = "spec.worker.allowedHosts"

_HOST_NAME: Final = re.compile(r"^(?=.{1,253}$)[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED: Final = ipaddress.IPv4Network("100.64.0.0/10")
_METADATA: Final = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_SPECIAL: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        # IANA special-purpose blocks that are not globally reachable, spelled out here since
        # `is_global` misses some of them in older Pythons (192.0.0.8 in 3.11, for one).
        "0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
        "100::/64", "2001::/23", "2001:db8::/32", "64:ff9b:1::/48", "5f00::/16",
    )
)  # fmt: skip


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for host, in its order of preference."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def normalize_host(host: str) -> str:
    """The host as it is resolved and matched: IP literals in their compressed form (an IPv6
    zone id kept), names IDNA-encoded (fullwidth letters and ideographic dots become ASCII),
    lower case, without a trailing dot. ValueError for anything else."""
    literal = _ip_literal(host)
    if literal is not None:
        return str(literal)
    try:
        name = host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        raise ValueError(f"{host!r} is not a valid host name") from None
    literal = _ip_literal(name)  # fullwidth digits and dots make an IP address too
    if literal is not None:
        return str(literal)
    if not _HOST_NAME.match(name):
        raise ValueError(f"{host!r} is not a valid host name")
    return name


def _ip_literal(host: str) -> IPAddress | None:
    # An IPv6 zone id arrives percent-encoded in URLs (RFC 6874: [fe80::1%25eth0]).
    text = host.replace("%25", "%") if ":" in host else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def internal_kind(address: IPAddress) -> str | None:
    """Why an address is internal ("loopback", "private", ...), or None when it is public.
    IPv4 addresses inside IPv6 (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16)
    are judged as the IPv4 address they carry."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            kind = internal_kind(embedded)
            return None if kind is None else f"{kind} (IPv4 {embedded} inside IPv6)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        plain = ipaddress.ip_address(str(address).partition("%")[0])
        return "link-local (cloud metadata)" if plain in _METADATA else "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (carrier-grade NAT)"
    if address.is_private:
        return "private"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_reserved or any(address in network for network in _SPECIAL):
        return "reserved"
    if not address.is_global:
        return "non-global"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


@dataclass(frozen=True)
class AllowedHosts:
    """The queue's exceptions: hosts that may be reached although their addresses are
    internal. An exact name or `*.domain` allows whatever that name resolves to; an IP
    address or CIDR allows those addresses under any name."""

    names: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()
    """Suffixes with their leading dot: `*.svc.cluster.local` -> `.svc.cluster.local`."""
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowedHosts:
        """ValueError naming the first entry that is none of name, `*.domain`, IP, CIDR."""
        names: set[str] = set()
        domains: list[str] = []
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip()
            try:
                if "/" in text:
                    networks.append(ipaddress.ip_network(text, strict=False))
                elif (literal := _ip_literal(text.strip("[]"))) is not None:
                    networks.append(ipaddress.ip_network(str(literal).partition("%")[0]))
                elif text.startswith("*."):
                    domains.append("." + normalize_host(text[2:]))
                else:
                    names.add(normalize_host(text))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not a host name, *.domain wildcard, IP address or CIDR"
                ) from None
        return cls(frozenset(names), tuple(domains), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        """host: as `normalize_host` gives it."""
        if host in self.names or any(host.endswith(domain) for domain in self.domains):
            return True
        plain = ipaddress.ip_address(str(address).partition("%")[0])
        candidates: list[IPAddress] = [plain]
        if isinstance(plain, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(plain)
            if embedded is not None:
                candidates.append(embedded)
        return any(a in network for a in candidates for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.names or self.domains or self.networks)


@dataclass(frozen=True)
class Destination:
    """A host that passed the policy and the addresses to connect to (all checked)."""

    host: str
    port: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Sandbox:
    file_roots: tuple[Path, ...]
    """Resolved (symlinks followed) absolute directories."""
    allowed_hosts: AllowedHosts = AllowedHosts()
    transfer_timeout_seconds: float = 3600.0
    """Most seconds one download or upload may take as a whole."""
    resolve: Resolver = dataclasses.field(default=system_resolver, compare=False)
    s3: S3Settings | None = None
    """The queue's object store for s3:// URLs (spec.storage.s3); None: s3:// is refused.
    Its endpoint is the queue's own choice and not subject to `allowed_hosts`."""

    @staticmethod
    def roots(paths: Sequence[str]) -> tuple[Path, ...]:
        """The roots resolved; ValueError for one that is not absolute."""
        resolved = []
        for path in paths:
            if not path.startswith("/") or "\x00" in path:
                raise ValueError(f"{path!r} is not an absolute path")
            resolved.append(Path(os.path.realpath(path)))
        return tuple(resolved)

    # -- paths ------------------------------------------------------------------------------

    def confine(self, path: str, *, field: str) -> Path:
        """The real path of `path` (already percent-decoded), `..` and symlinks resolved as
        far as the path exists, if it is inside a root. A symlink as the last component is
        followed too: an output is then written to where the link points, never through
        it."""
        if "\x00" in path:
            raise invalid(field, "the path contains a NUL byte")
        try:
            os.fsencode(path)
        except UnicodeError:
            raise invalid(field, f"{path!r} cannot be a file name here") from None
        if not path.startswith("/"):
            raise invalid(field, "a file:// URL needs an absolute path, e.g. file:///media/in.mp4")
        resolved = os.path.realpath(path)
        # A symlink loop stops realpath, which then returns the rest unresolved (`loop/..`
        # is then dropped as text, leaving what follows unresolved): only a path that
        # resolves to itself again is used.
        if os.path.realpath(resolved) != resolved:
            raise invalid(field, f"{path} has a symlink loop in it")
        if not any(Path(resolved).is_relative_to(root) for root in self.file_roots):
            raise invalid(field, self._outside_roots(path))
        return Path(resolved)

    def _outside_roots(self, path: str) -> str:
        if not self.file_roots:
            return (
                f"{path} is a local path, and this queue allows no local files: add a "
                f"directory to the queue's {ROOTS_FIELD}, or use an http(s) URL"
            )
        roots = ", ".join(str(root) for root in self.file_roots)
        return (
            f"{path} is outside the queue's file roots ({roots}) once '..' and symlinks are "
            f"resolved; use a path inside one of them, or add its directory to {ROOTS_FIELD}"
        )

    def still_inside(self, directory: Path, *, field: str) -> None:
        """Check again, just before a rename into it, that a checked directory still
        resolves inside a root (it could have been replaced by a symlink meanwhile)."""
        self.confine(str(directory), field=field)

    # -- hosts ------------------------------------------------------------------------------

    def check_host(self, host: str, port: int, *, field: str) -> Destination:
        """Resolve host (from `normalize_host`) once and refuse it unless every address is
        public or allowed. OSError when it does not resolve (which may pass: not invalid)."""
        literal = _ip_literal(host)
        addresses = [host] if literal is not None else list(self.resolve(host, port))
        if not addresses:
            raise OSError(f"{host} has no address")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise invalid(
                    field, f"host {host} resolves to {text!r}, not an IP address"
                ) from None
            kind = internal_kind(address)
            if kind is None or self.allowed_hosts.allows(host, address):
                continue
            what = f"host {host} is" if literal is not None else f"host {host} resolves to {text},"
            raise invalid(
                field,
                f"{what} a {kind} address, which workers may not reach unless the queue "
                f"allows it: add the host, or a CIDR that contains the address, to "
                f"{HOSTS_FIELD}",
            )
        return Destination(host=host, port=port, addresses=tuple(addresses))
