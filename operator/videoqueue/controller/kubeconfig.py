"""Where the operator's API client connects and how it authenticates: kubeconfig files
merged the way kubectl merges them, or the pod's service account; TLS and the bearer token.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

from videoqueue.controller.kube_errors import KubeConfigError

Obj = dict[str, Any]
# Where Kubernetes mounts a pod's service account token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def is_service_account_token(token: str) -> bool:
    """Whether `token` is this pod's service-account token (so it rotates in its file)."""
    try:
        return (SERVICE_ACCOUNT_DIR / "token").read_text().strip() == token
    except OSError:
        return False


def load_kubeconfig(paths: Sequence[Path]) -> Obj:
    """Merge kubeconfig files the way kubectl does: the first definition of a name wins and
    the first current-context wins. File paths inside are made absolute relative to the file
    that names them, so the merged document can be used from anywhere."""
    merged: Obj = {"clusters": [], "users": [], "contexts": [], "current-context": None}
    seen: dict[str, set[str]] = {"clusters": set(), "users": set(), "contexts": set()}
    for path in paths:
        document = yaml.safe_load(path.read_text()) or {}
        base = path.resolve().parent
        merged["current-context"] = merged["current-context"] or document.get("current-context")
        for section, inner, fields in (
            ("clusters", "cluster", ("certificate-authority",)),
            ("users", "user", ("client-certificate", "client-key", "tokenFile")),
            ("contexts", "context", ()),
        ):
            for entry in document.get(section) or []:
                if entry["name"] in seen[section]:
                    continue
                seen[section].add(entry["name"])
                body = dict(entry.get(inner) or {})
                for field in fields:
                    if body.get(field):
                        body[field] = str(base / os.path.expanduser(body[field]))
                merged[section].append({"name": entry["name"], inner: body})
    return merged


def kubeconfig_paths(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """The kubeconfig files to read: `path`, else the existing files $KUBECONFIG lists,
    else ~/.kube/config if it exists; empty means "use the service account"."""
    if path is not None:
        if not Path(path).exists():
            raise KubeConfigError(f"kubeconfig {os.fspath(path)} does not exist")
        return [Path(path)]
    listed = (os.environ if environ is None else environ).get("KUBECONFIG", "")
    candidates = [Path(os.path.expanduser(p)) for p in listed.split(os.pathsep) if p]
    if not listed:
        candidates = [Path.home() / ".kube" / "config"]
    return [p for p in candidates if p.exists()]


def connection_info_from_kubeconfig(
    document: Mapping[str, Any], *, context: str | None = None
) -> tuple[kopf.ConnectionInfo, Path | None]:
    """kopf's connection info for a (merged) kubeconfig's context, and the token file to
    re-read if the user's token comes from one."""
    name = context or document.get("current-context")
    if not name:
        raise KubeConfigError("the kubeconfig sets no current-context")

    def find(section: str, inner: str, wanted: str) -> Obj:
        for entry in document.get(section) or []:
            if entry.get("name") == wanted:
                return dict(entry.get(inner) or {})
        raise KubeConfigError(f"the kubeconfig has no {inner} named {wanted!r}")

    ctx = find("contexts", "context", name)
    cluster = find("clusters", "cluster", ctx.get("cluster", ""))
    user = find("users", "user", ctx.get("user", "")) if ctx.get("user") else {}
    if "exec" in user:
        raise KubeConfigError(
            f"user {ctx.get('user')!r} uses an exec credential plugin, which this client does "
            "not run; use a token or a client certificate"
        )
    token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
    token = user.get("token") or (user.get("auth-provider") or {}).get("config", {}).get(
        "access-token"
    )
    if token is None and token_file is not None:
        token = token_file.read_text().strip()
    info = kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=cluster.get("certificate-authority"),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=user.get("client-certificate"),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=user.get("client-key"),
        private_key_data=user.get("client-key-data"),
        username=user.get("username"),
        password=user.get("password"),
        token=token,
        default_namespace=ctx.get("namespace"),
        proxy_url=cluster.get("proxy-url"),
    )
    return info, token_file


def find_connection_info(
    path: str | os.PathLike[str] | None = None, *, context: str | None = None
) -> tuple[kopf.ConnectionInfo, Path | None]:
    """Where to connect and how, for the operator's own client and for kopf's watches alike:
    `path`, else $KUBECONFIG (several files merged), else ~/.kube/config, else the pod's
    service account; and the token file to re-read, if any."""
    paths = kubeconfig_paths(path)
    if paths:
        return connection_info_from_kubeconfig(load_kubeconfig(paths), context=context)
    found = in_cluster_connection_info()
    if found is None:
        raise KubeConfigError("no kubeconfig found and not running in a pod")
    return found


def in_cluster_connection_info(
    account_dir: Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> tuple[kopf.ConnectionInfo, Path] | None:
    """The pod's service account, or None outside a pod."""
    token_file = account_dir / "token"
    if not token_file.exists():
        return None
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    ca = account_dir / "ca.crt"
    namespace = account_dir / "namespace"
    info = kopf.ConnectionInfo(
        server=f"https://{host}:{port}",
        ca_path=str(ca) if ca.exists() else None,
        token=token_file.read_text().strip(),
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
    )
    return info, token_file


def pem(data: str | bytes) -> str:
    """kubeconfig `*-data` fields are base64 of PEM; kopf's login handlers pass them as they
    are, and custom ones may pass PEM itself. Accept both."""
    text = data.decode("ascii") if isinstance(data, bytes) else data
    if "-----BEGIN" in text:
        return text
    return base64.b64decode(text).decode("ascii")


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=os.fsdecode(info.ca_path) if info.ca_path else None,
        cadata=pem(info.ca_data) if info.ca_data else None,
    )
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    has_cert = bool(info.certificate_path or info.certificate_data)
    has_key = bool(info.private_key_path or info.private_key_data)
    if has_cert != has_key:
        raise KubeConfigError("a client certificate needs both the certificate and its key")
    if not has_cert:
        return context
    # The ssl module loads certificates only from files: in-memory data goes through a
    # private temporary directory that is removed as soon as the chain is loaded.
    with tempfile.TemporaryDirectory(prefix="videoqueue-tls-") as tmp:

        def as_file(path: Any, data: str | bytes | None, name: str) -> str:
            if path:
                return os.fsdecode(path)
            target = Path(tmp) / name
            target.write_text(pem(data or ""))
            return str(target)

        context.load_cert_chain(
            certfile=as_file(info.certificate_path, info.certificate_data, "client.crt"),
            keyfile=as_file(info.private_key_path, info.private_key_data, "client.key"),
        )
    return context


def authorization_header(info: kopf.ConnectionInfo) -> str | None:
    if info.username and info.password:
        return aiohttp.BasicAuth(info.username, info.password).encode()
    if info.token:
        return f"{info.scheme or 'Bearer'} {info.token}"
    return info.scheme or None
