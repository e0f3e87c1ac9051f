"""`python -m videoqueue`: run the operator against the cluster of $KUBECONFIG or in-cluster.

High availability: run several replicas; one acts, the others stand by (kopf peering). The
replicas publish keep-alives in a ClusterKopfPeering object, and only the live replica with
the highest priority watches and writes; the others keep no watches open and write nothing
but their keep-alive. When the acting replica stops renewing its keep-alive (killed, node
lost), the next one takes over once the keep-alive's lifetime has run out; when it exits
cleanly it withdraws its keep-alive and the next one takes over at once.

Peering modes:
  (default)        peer in the ClusterKopfPeering named `videoqueue-operator` when the
                   peering CRD (crds/peering/clusterkopfpeerings.kopf.dev.yaml) is installed,
                   and run standalone when it is not;
  --peering NAME   peer in the ClusterKopfPeering NAME; exit with an error when the CRD is
                   missing;
  --standalone     never peer (one replica only, or development against a cluster whose
                   operator is stopped).
When peering, the ClusterKopfPeering object is created if it does not exist, and a replica
stands by until it has seen the peering state (it never acts before knowing whether another
replica does).

Priorities: replicas must have distinct priorities (kopf pauses every replica of a tie). By
default the priority comes from the start time, older replicas first
(`-(start time in microseconds)`): the acting replica keeps acting while others start and
stop, and a replacement never takes over from a replica that is still renewing its
keep-alive. `--priority N` sets it explicitly (higher acts first).

Identity: kopf names a replica by $POD_ID when set (give it the pod's metadata.name); a
container restarted in the same pod then replaces its own keep-alive instead of waiting for
the old one to expire.

`--peering-lifetime SECONDS` (default 60): how long a keep-alive counts; the takeover delay
after a replica dies without exiting cleanly. Keep-alives are renewed a few seconds before
they expire (one PATCH per replica per lifetime, whatever the load).

Fencing: the acting replica also holds the coordination.k8s.io Lease `--lease NAME` (default
videoqueue-operator) in `--lease-namespace` (default $POD_NAMESPACE, else the service
account's namespace, else `default`), for the peering lifetime, renewed every quarter of it.
A replica writes nothing unless its last confirmed renewal is younger than three quarters
of the lifetime; a replica that finds its claim lapsed (it was frozen, or could not renew)
logs it and exits with status 3, to be restarted fresh as a standby. A replica takes the
Lease only once it is free, its own, or unrenewed for a whole lifetime as it watched it: a
takeover waits for that, as it waits for the keep-alive. The identity is $POD_ID, else host,
process id and a random suffix; it is also in the User-Agent of the operator's requests.
`--no-fencing` (only with --standalone) runs without the Lease.

Progress channel (Redis): with --redis-url (or $VIDEOQUEUE_REDIS_URL) workers publish stage,
progress and heartbeats to a Redis stream, and the acting replica writes them into job status
at a bounded rate (--progress-interval per job, --progress-writes-per-second overall) and
detects stalled workers (progressDeadlineSeconds). The password comes from
$VIDEOQUEUE_REDIS_PASSWORD or --redis-password-file (a mounted Secret); workers get it from the
Secret named by --redis-password-secret NAME/KEY (in each job's namespace). rediss:// is TLS;
--redis-ca-file trusts a private CA. Without a URL there is no live progress and no stalled-
worker detection; everything else works. While Redis is down, jobs run and finish as ever.

Metrics and probes: every replica serves, on --metrics-bind:--metrics-port (default
0.0.0.0:8080), Prometheus metrics on /metrics (docs/metrics.md), liveness on /healthz and
readiness on /readyz (ready once it acts on a primed index, or stands by for another replica).

Sharding simulation: `--shard INDEX/COUNT` (with --standalone) schedules only the queues that
hash to that shard, for measuring several processes side by side (benchmarks/scale/shards.py);
it is not high availability and takes no queue over from another process (docs/sharding.md).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # kopf imports the kubernetes and pykube clients whenever they are installed (the kubectl
    # plugin and the tests use them) to recognise their objects and to log in with them. The
    # operator uses neither (kopf's watches log in as the operator's own client does:
    # `login` in controller/handlers.py); kept out, a replica holds about 60 MiB less
    # (kubernetes 36, pykube with requests 24; VmRSS after importing each).
    for _unused in ("kubernetes", "pykube"):
        sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import kopf

from videoqueue import __version__
from videoqueue.controller import handlers, metrics_server  # importing handlers registers them
from videoqueue.controller.fencing import LeaseSettings
from videoqueue.controller.gc_settings import tune_garbage_collection
from videoqueue.controller.kube import KubeApiError, KubeClient
from videoqueue.controller.kube_helpers import Resource
from videoqueue.controller.kubeconfig import SERVICE_ACCOUNT_DIR
from videoqueue.controller.progress_settings import (
    DEFAULT_JOB_INTERVAL,
    DEFAULT_WRITES_PER_SECOND,
    ProgressSettings,
    settings_from_options,
)
from videoqueue.controller.sharding import ShardFilter
from videoqueue.scheduling.sharding import Shard

logger = logging.getLogger("videoqueue")

DEFAULT_PEERING_NAME = "videoqueue-operator"
PEERING_CRD = "crds/peering/clusterkopfpeerings.kopf.dev.yaml"
CLUSTER_PEERINGS = Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
DEFAULT_LEASE_NAME = "videoqueue-operator"
EXIT_FENCED = 3
# How long a fenced replica's graceful exit may take before it is cut short.
FENCED_EXIT_SECONDS = 20.0


@dataclass(frozen=True)
class Peering:
    """How this replica takes part in peering; `name` None means standalone."""

    name: str | None
    priority: int
    lifetime: int


def default_priority(now_ns: int | None = None) -> int:
    """Older replicas first: the negated start time in microseconds."""
    return -((time.time_ns() if now_ns is None else now_ns) // 1000)


async def ensure_peering_object(name: str) -> bool:
    """Create the ClusterKopfPeering `name` unless it exists; False when the CRD is missing."""
    async with await KubeClient.from_kubeconfig() as kube:
        if await kube.get(CLUSTER_PEERINGS, None, name) is not None:
            return True
        body = {
            "apiVersion": CLUSTER_PEERINGS.api_version,
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        try:
            await kube.create(CLUSTER_PEERINGS, None, body)
        except KubeApiError as e:
            if e.status == 404:
                return False
            raise
        return True


def own_identity() -> str:
    """$POD_ID (the pod's name: a restarted container is the same replica), else host,
    process id and a random suffix."""
    pod = os.environ.get("POD_ID")
    return pod or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def lease_namespace(flag: str | None) -> str:
    if flag:
        return flag
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    with contextlib.suppress(OSError):
        if namespace := (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip():
            return namespace
    return "default"


def resolve_lease(args: argparse.Namespace, identity: str) -> LeaseSettings | None:
    if args.no_fencing:
        return None
    namespace = lease_namespace(args.lease_namespace)
    return LeaseSettings(args.lease, namespace, identity, args.peering_lifetime)


class Fenced:
    """What the operator does once its claim lapsed: stop kopf (whose graceful exit withdraws
    the keep-alive, so a standby takes over at once), and exit with EXIT_FENCED."""

    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.why: str | None = None

    def __call__(self, why: str) -> None:
        self.why = why
        logger.error(
            "fenced: %s; writing nothing more and exiting, to start again as a standby", why
        )
        self.stop_flag.set()
        asyncio.get_running_loop().call_later(FENCED_EXIT_SECONDS, _exit_now)


def _exit_now() -> None:
    logger.error("fenced: the graceful exit took too long; exiting now")
    logging.shutdown()
    os._exit(EXIT_FENCED)


def resolve_peering(args: argparse.Namespace) -> Peering:
    priority = args.priority if args.priority is not None else default_priority()
    if args.standalone:
        return Peering(None, priority, args.peering_lifetime)
    name = args.peering or DEFAULT_PEERING_NAME
    if asyncio.run(ensure_peering_object(name)):
        return Peering(name, priority, args.peering_lifetime)
    if args.peering:
        raise SystemExit(
            f"--peering {name}: the ClusterKopfPeering CRD (kopf.dev) is not installed; "
            f"apply {PEERING_CRD} or run with --standalone"
        )
    logger.info("the kopf.dev peering CRD is not installed: running standalone (one replica)")
    return Peering(None, priority, args.peering_lifetime)


def run_operator(args: argparse.Namespace, **operator: Any) -> None:
    """kopf's operator (`kopf.operator(**operator)`) and the metrics and probe server, in one
    event loop: a scrape reads the index between scheduler steps, never during one."""

    async def run() -> None:
        try:
            server = await metrics_server.start_server(
                args.metrics_bind, args.metrics_port, handlers.activity
            )
        except OSError as e:
            raise SystemExit(
                f"--metrics-bind {args.metrics_bind} --metrics-port {args.metrics_port}: cannot "
                f"listen there ({e.strerror or e}); pick a free port with --metrics-port"
            ) from e
        try:
            await kopf.operator(**operator)
        finally:
            # kopf waits for a threading.Event stop flag in an executor thread; raise it, or
            # asyncio.run would wait for that thread forever after a SIGTERM.
            if isinstance(flag := operator.get("stop_flag"), threading.Event):
                flag.set()
            await server.cleanup()

    tune_garbage_collection()
    with contextlib.suppress(asyncio.CancelledError):  # as kopf.run does
        asyncio.run(run())


def resolve_progress(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> ProgressSettings | None:
    try:
        return settings_from_options(
            url=args.redis_url,
            password_file=args.redis_password_file,
            password_secret=args.redis_password_secret,
            ca_file=args.redis_ca_file,
            stream=args.progress_stream,
            job_interval=args.progress_interval,
            writes_per_second=args.progress_writes_per_second,
        )
    except ValueError as e:
        parser.error(str(e))


def resolve_shard(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ShardFilter | None:
    if args.shard is None:
        return None
    if not args.standalone:
        parser.error("--shard needs --standalone: it simulates sharding, one process per shard")
    try:
        return ShardFilter(Shard.parse(args.shard))
    except ValueError as e:
        parser.error(f"--shard: {e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="videoqueue", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--standalone", action="store_true", help="never peer with other replicas")
    mode.add_argument("--peering", metavar="NAME", help="peer in this ClusterKopfPeering")
    parser.add_argument(
        "--lease",
        default=DEFAULT_LEASE_NAME,
        metavar="NAME",
        help=f"the Lease the acting replica holds (default {DEFAULT_LEASE_NAME})",
    )
    parser.add_argument(
        "--lease-namespace",
        metavar="NAMESPACE",
        help="namespace of the Lease (default $POD_NAMESPACE, else the service account's)",
    )
    parser.add_argument(
        "--no-fencing",
        action="store_true",
        help="hold no Lease and guard no write (only with --standalone)",
    )
    parser.add_argument(
        "--priority", type=int, help="peering priority, higher acts first (default: start time)"
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        metavar="SECONDS",
        help="how long a keep-alive counts: the takeover delay after a crash (default 60)",
    )
    parser.add_argument(
        "--metrics-bind",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="address of the metrics and probe server (default 0.0.0.0: all interfaces)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="port of /metrics, /healthz and /readyz (default 8080)",
    )
    parser.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="schedule only the queues that hash to shard INDEX of COUNT (0/2, 1/2); a "
        "simulation for measurement (benchmarks/scale/shards.py), not high availability: "
        "no Lease per shard, no takeover (docs/sharding.md); only with --standalone",
    )
    redis = parser.add_argument_group("progress channel (Redis)")
    redis.add_argument(
        "--redis-url",
        metavar="URL",
        help="redis://host:port/db or rediss:// (TLS), no password in it "
        "(default $VIDEOQUEUE_REDIS_URL; unset: no live progress, no stall detection)",
    )
    redis.add_argument(
        "--redis-password-file",
        metavar="PATH",
        help="file holding the Redis password, e.g. a mounted Secret "
        "(default $VIDEOQUEUE_REDIS_PASSWORD_FILE; or the password in $VIDEOQUEUE_REDIS_PASSWORD)",
    )
    redis.add_argument(
        "--redis-password-secret",
        metavar="NAME/KEY",
        help="Secret and key in each job's namespace that worker pods read the password from",
    )
    redis.add_argument(
        "--redis-ca-file",
        metavar="PATH",
        help="CA bundle for a rediss:// server (default $VIDEOQUEUE_REDIS_CA_FILE)",
    )
    redis.add_argument(
        "--progress-stream",
        metavar="KEY",
        help="the stream key (default $VIDEOQUEUE_PROGRESS_STREAM, else videoqueue:progress)",
    )
    redis.add_argument(
        "--progress-interval",
        type=float,
        default=DEFAULT_JOB_INTERVAL,
        metavar="SECONDS",
        help=f"least time between two progress writes of a job (default {DEFAULT_JOB_INTERVAL:g})",
    )
    redis.add_argument(
        "--progress-writes-per-second",
        type=float,
        default=DEFAULT_WRITES_PER_SECOND,
        metavar="N",
        help="most progress writes a second, all jobs together "
        f"(default {DEFAULT_WRITES_PER_SECOND:g})",
    )
    args = parser.parse_args(argv)
    if args.peering_lifetime < 2:
        parser.error("--peering-lifetime must be at least 2 seconds")
    if args.no_fencing and not args.standalone:
        parser.error("--no-fencing needs --standalone: replicas that peer must be fenced")
    if not 1 <= args.metrics_port <= 65535:
        parser.error(
            f"--metrics-port must be a port number from 1 to 65535, not {args.metrics_port}"
        )
    progress = resolve_progress(parser, args)
    shard = resolve_shard(parser, args)
    # kopf.configure installs the one root handler; a basicConfig handler would print twice.
    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        # kopf logs "Handler ... succeeded." at INFO for every watch event: a line per pod
        # and job change, which costs more CPU than handling the event. Failures still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    peering = resolve_peering(args)
    settings = kopf.OperatorSettings()
    settings.peering.lifetime = peering.lifetime
    if progress is None:
        logger.info("progress channel off (no --redis-url): no live progress, no stall detection")
    identity = own_identity()
    fenced = Fenced()
    memo = kopf.Memo(
        progress=progress,
        lease=resolve_lease(args, identity),
        on_stale=fenced,
        user_agent=f"videoqueue-operator/{__version__} ({identity})",
        shard=shard,
    )
    common: dict[str, Any] = {
        "clusterwide": True,
        "settings": settings,
        "memo": memo,
        "identity": identity,
        "stop_flag": fenced.stop_flag,
    }
    if peering.name is None:
        run_operator(args, standalone=True, **common)
    else:
        run_peering(args, peering, common)
    if fenced.why is not None:
        raise SystemExit(EXIT_FENCED)


def run_peering(args: argparse.Namespace, peering: Peering, common: dict[str, Any]) -> None:
    logger.info(
        "peering in ClusterKopfPeering %s with priority %d: standing by until no live replica "
        "has a higher priority",
        peering.name,
        peering.priority,
    )
    # A peering name makes peering mandatory: kopf starts paused and watches nothing until it
    # has read the peering state, so a new replica never acts next to the acting one.
    run_operator(
        args,
        standalone=False,
        peering_name=peering.name,
        priority=peering.priority,
        **common,
    )


if __name__ == "__main__":
    main()
