"""Pure pieces of the test environment: node manifests, pod scripts, certificates, ports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509

from videoqueue.envtest.cluster import kubeconfig_document
from videoqueue.envtest.cluster.processes import _free_ports
from videoqueue.envtest.kwok import (
    EXIT_CODE,
    MESSAGE,
    NODE_SELECTOR,
    REASON,
    RUN_DURATION,
    NodeSpec,
    build_node_manifest,
    pod_script,
    stages_file,
)
from videoqueue.envtest.pki import create_pki


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, {RUN_DURATION: "2s"}, id="succeeds"),
        pytest.param({"exit_code": 3}, {RUN_DURATION: "2s", EXIT_CODE: "3"}, id="exit-code"),
        pytest.param({"reason": "OOMKilled"}, {RUN_DURATION: "2s", REASON: "OOMKilled"}, id="oom"),
        pytest.param({"message": "{}"}, {RUN_DURATION: "2s", MESSAGE: "{}"}, id="result"),
    ],
)
def test_pod_script_annotations(kwargs: dict[str, object], expected: dict[str, str]) -> None:
    assert pod_script("2s", **kwargs) == expected  # type: ignore[arg-type]


def test_node_manifest_is_managed_by_kwok_with_given_allocatable() -> None:
    node = build_node_manifest(NodeSpec("n1", cpu="4", memory="8Gi", pods=10, labels={"pool": "a"}))

    key, value = NODE_SELECTOR.split("=")
    assert node["metadata"]["annotations"][key] == value
    assert node["metadata"]["labels"]["pool"] == "a"
    assert node["status"]["allocatable"] == {"cpu": "4", "memory": "8Gi", "pods": "10"}


def test_stages_file_names_every_annotation() -> None:
    text = stages_file().read_text()
    documents = list(yaml.safe_load_all(text))
    stages = [d for d in documents if d["kind"] == "Stage"]

    assert [d["kind"] for d in documents] == ["KwokConfiguration"] + ["Stage"] * len(stages)
    assert documents[0]["options"]["podPlayStageParallelism"] > 4
    assert [s["metadata"]["name"] for s in stages] == [
        "videoqueue-node-ready",
        "videoqueue-node-heartbeat",
        "videoqueue-pod-start",
        "videoqueue-pod-exit",
        "videoqueue-pod-delete",
    ]
    for annotation in (RUN_DURATION, EXIT_CODE, REASON, MESSAGE):
        assert annotation in text


def test_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    pki = create_pki(tmp_path)
    admin = pki.client(tmp_path, "admin", "someone", "system:masters")

    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    for pair in (pki.apiserver, admin):
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
    client_cert = x509.load_pem_x509_certificate(admin.cert.read_bytes())
    assert client_cert.subject.rfc4514_string() == "O=system:masters,CN=someone"
    sans = x509.load_pem_x509_certificate(
        pki.apiserver.cert.read_bytes()
    ).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "kubernetes.default.svc" in sans.value.get_values_for_type(x509.DNSName)


def test_free_ports_are_distinct() -> None:
    ports = _free_ports(20)
    assert len(set(ports)) == 20


def test_kubeconfig_points_at_server_with_client_cert(tmp_path: Path) -> None:
    doc = kubeconfig_document(
        "https://127.0.0.1:1", tmp_path / "ca", tmp_path / "c", tmp_path / "k", user="u"
    )

    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"
    assert doc["users"][0]["user"]["client-certificate"] == str(tmp_path / "c")
    assert doc["current-context"] == doc["contexts"][0]["name"]
