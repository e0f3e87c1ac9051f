"""What the operator or its worker would refuse later, `kubectl apply` refuses first (issue 14).

Every hostile manifest is applied both ways, client-side and server-side (which sends no
last-applied annotation and so takes objects up to the API server's request limit), and must
be refused with a message naming the field. Each refusal has an accepted counterpart at the
limit, so a rule that refuses too much fails here too.
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

from videoqueue.api.job_payload import (
    MAX_PARAM_LIST_ITEMS,
    MAX_PARAM_LIST_STRING_LENGTH,
    MAX_PARAM_STRING_LENGTH,
    MAX_PARAMS,
    MAX_URL_BYTES,
)
from videoqueue.envtest import ClusterBase
from videoqueue.envtest.builders import MakeJob, MakeQueue

pytestmark = pytest.mark.integration

WIDE = "\U0001f3ac"  # four bytes in UTF-8, one character to the schema
KIB = 1024

APPLY_MODES = [
    pytest.param(("apply",), id="client-side"),
    pytest.param(("apply", "--server-side"), id="server-side"),
]


def apply(
    cluster: ClusterBase, namespace: str, manifest: dict[str, Any], mode: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    # One name per mode: both modes then start from nothing.
    named = copy.deepcopy(manifest)
    named["metadata"]["name"] += f"-{len(mode)}"
    return cluster.kubectl(*mode, "-n", namespace, "-f", "-", input=json.dumps(named), check=False)


def custom_job(**spec: Any) -> dict[str, Any]:
    """A job of a custom type, which any scheme and any param names may serve."""
    return MakeJob().type("my-encoder").spec(**spec).obj()


def largest_params() -> dict[str, Any]:
    """As many params as allowed, each at the most the schema allows, in wide characters."""
    params: dict[str, Any] = {
        f"{i:02d}".rjust(63, "k"): WIDE * MAX_PARAM_STRING_LENGTH for i in range(MAX_PARAMS - 1)
    }
    params["list"] = [WIDE * MAX_PARAM_LIST_STRING_LENGTH] * MAX_PARAM_LIST_ITEMS
    return params


REFUSED = [
    # 1. spec.params: the serialized job must fit the worker's 32 KiB.
    pytest.param(
        custom_job(params={"blob": "x" * 40 * KIB}),
        f"spec.params.blob: Too long: may not be more than {MAX_PARAM_STRING_LENGTH}",
        id="params-40KiB-string",
    ),
    pytest.param(
        custom_job(params={f"p{i}": "x" * MAX_PARAM_STRING_LENGTH for i in range(MAX_PARAMS + 1)}),
        f"spec.params: Too many: {MAX_PARAMS + 1}: must have at most {MAX_PARAMS} items",
        id="params-one-entry-too-many",
    ),
    pytest.param(
        custom_job(params={"k" * 64: 1}),
        "spec.params must have at most 32 entries, each keyed by 1 to 63 letters",
        id="param-key-too-long",
    ),
    pytest.param(
        custom_job(params={"scale": {"width": 1280}}),
        "spec.params.scale: Too many: 1: must have at most 0 items",
        id="nested-object-param",
    ),
    pytest.param(
        custom_job(params={"tags": ["x"] * (MAX_PARAM_LIST_ITEMS + 1)}),
        f"spec.params.tags: Too many: {MAX_PARAM_LIST_ITEMS + 1}: must have at most",
        id="list-param-too-long",
    ),
    pytest.param(
        custom_job(params={"note": "a\u0001b"}),
        "spec.params.note in body should match",
        id="control-character-in-param",
    ),
    pytest.param(
        custom_job(input={"url": "/" + "\u00e9" * (MAX_URL_BYTES // 2)}),
        f"spec.input.url must be at most {MAX_URL_BYTES} bytes (UTF-8)",
        id="input-url-over-the-byte-limit",
    ),
    pytest.param(
        custom_job(output={"url": 's3://media/"out"/'}),
        "spec.output.url must not contain control characters",
        id="quote-in-output-url",
    ),
    # 2. The stock worker's schemes.
    pytest.param(
        MakeJob().input("ftp://media.example/in.mp4").obj(),
        "spec.input.url of a stock job type (probe, transcode, thumbnail, audio, clip, hls) "
        "must be",
        id="ftp-input-for-transcode",
    ),
    pytest.param(
        MakeJob().type("probe").input("s3://media").obj(),
        "spec.input.url of a stock job type",
        id="s3-url-without-a-key",
    ),
    pytest.param(
        MakeJob().type("probe").input("gs://media/in.mp4").obj(),
        "spec.input.url of a stock job type",
        id="gs-input-for-probe",
    ),
    pytest.param(
        MakeQueue().s3_storage(endpoint="http://s3.media.internal:8333/media").obj(),
        "spec.storage.s3.endpoint must be an http(s) URL of a host and optional port without "
        "a path",
        id="s3-endpoint-with-a-path",
    ),
    pytest.param(
        MakeQueue().s3_storage(endpoint="s3.media.internal").obj(),
        "spec.storage.s3.endpoint must be an http(s) URL",
        id="s3-endpoint-without-scheme",
    ),
    pytest.param(
        MakeQueue().spec(storage={"s3": {"region": "us-east-1"}}).obj(),
        "secretRef: Required value",
        id="s3-without-a-secret",
    ),
    pytest.param(
        MakeQueue().s3_storage(addressingStyle="DNS").obj(),
        "addressingStyle: Unsupported value",
        id="s3-unknown-addressing-style",
    ),
    pytest.param(
        MakeJob().output("ftp://media.example/out/").obj(),
        "spec.output.url of a stock job type",
        id="ftp-output-for-transcode",
    ),
    pytest.param(
        MakeJob().output("file://media-host/out/").obj(),
        "spec.output.url of a stock job type",
        id="file-url-with-a-host",
    ),
    # 3. Health thresholds in order.
    pytest.param(
        MakeQueue().health(backlogWarning=20_000).obj(),
        "spec.health.backlogWarning must not exceed spec.health.backlogCritical",
        id="backlog-warning-above-default-critical",
    ),
    pytest.param(
        MakeQueue().health(failureRateWarning=0.6, failureRateCritical=0.5).obj(),
        "spec.health.failureRateWarning must not exceed spec.health.failureRateCritical",
        id="failure-rate-warning-above-critical",
    ),
    # 4. Quantities: the message shows what was sent.
    pytest.param(
        MakeJob().memory("12XB").obj(),
        'spec.resources.memory: Invalid value: "": must be a positive memory quantity in bytes '
        "such as 512Mi, 2Gi or 1.5G (binary Ki/Mi/Gi/Ti or decimal k/M/G/T suffixes; not m, "
        'which means thousandths), not "12XB"',
        id="memory-12XB",
    ),
    pytest.param(
        MakeQueue().budget("lots").obj(),
        'spec.memory.budget: Invalid value: "": must be a positive memory quantity',
        id="budget-lots-named",
    ),
    pytest.param(
        MakeQueue().budget("lots").obj(),
        'which means thousandths), not "lots"',
        id="budget-lots",
    ),
    pytest.param(
        MakeJob().memory("1" * 65).obj(),
        "spec.resources.memory: Too long: may not be more than 64",
        id="memory-quantity-too-long",
    ),
    # 5. spec.worker.
    pytest.param(
        MakeQueue().worker(allowedHosts=["media.internal", "*.", "10.0.0.0/33"]).obj(),
        'spec.worker.allowedHosts[1]: Invalid value: "string": spec.worker.allowedHosts '
        "entries must each be a host name (media.internal), a *.domain wildcard",
        id="allowed-host-wildcard-without-domain",
    ),
    pytest.param(
        MakeQueue().worker(allowedHosts=["10.0.0.0/33"]).obj(),
        'spec.worker.allowedHosts[0]: Invalid value: "string": spec.worker.allowedHosts',
        id="allowed-host-bad-cidr",
    ),
    pytest.param(
        MakeQueue().worker(fileRoots=["/media/../etc"]).obj(),
        'spec.worker.fileRoots[0]: Invalid value: "string": spec.worker.fileRoots entries must '
        "be absolute directories without '..' segments",
        id="file-root-with-dot-dot",
    ),
    pytest.param(
        MakeQueue().worker(fileRoots=["media"]).obj(),
        "spec.worker.fileRoots[0] in body should match '^/'",
        id="relative-file-root",
    ),
    pytest.param(
        MakeQueue().worker(copyAnnotations=["Example.com/trace-id"]).obj(),
        'spec.worker.copyAnnotations[0]: Invalid value: "string": spec.worker.copyAnnotations '
        "entries must each be an annotation key",
        id="copy-annotation-not-a-key",
    ),
]

ACCEPTED = [
    pytest.param(custom_job(params=largest_params()), id="largest-params"),
    pytest.param(
        custom_job(
            input={"url": "/" + "\u00e9" * ((MAX_URL_BYTES - 1) // 2)},
            output={"url": "s3://media/" + "o" * (MAX_URL_BYTES - len("s3://media/"))},
        ),
        id="urls-at-the-byte-limit",
    ),
    pytest.param(
        custom_job(input={"url": "ftp://media.example/in.mp4"}, params={"tags": ["a", 1, True]}),
        id="custom-type-any-scheme",
    ),
    pytest.param(
        MakeJob()
        .type("clip")
        .input("HTTPS://media.example/in.mp4?sig=abc")
        .output("file:///media/out/")
        .params(start=1.5, duration=10, copy=False)
        .obj(),
        id="stock-type-supported-schemes",
    ),
    pytest.param(
        MakeJob().input("/media/My Movie.mov").output("file:/media/out/a.mp4").obj(),
        id="stock-type-bare-path-and-file-colon-slash",
    ),
    pytest.param(
        MakeJob()
        .type("clip")
        .input("S3://media/in/a b.mp4")
        .output("s3://media-out/clips/")
        .params(start=0, duration=5)
        .obj(),
        id="stock-type-s3-urls",
    ),
    pytest.param(
        MakeQueue()
        .s3_storage(
            "media-s3",
            endpoint="https://[fd00::7]:8333/",
            region="eu-west-3",
            addressingStyle="Virtual",
        )
        .obj(),
        id="s3-storage-of-every-form",
    ),
    pytest.param(MakeJob().memory(1_500_000_000).obj(), id="memory-as-a-byte-count"),
    pytest.param(
        MakeQueue()
        .spec(
            health={
                "backlogWarning": 10_000,
                "backlogCritical": 10_000,
                "failureRateWarning": 0.5,
                "failureRateCritical": 0.5,
            }
        )
        .obj(),
        id="thresholds-equal",
    ),
    pytest.param(
        MakeQueue()
        .spec(
            worker={
                "allowedHosts": [
                    "media.internal",
                    "*.svc.cluster.local",
                    "_http._tcp.media.internal.",
                    "10.0.0.7",
                    "fd00::7",
                    "[fd00::7]",
                    "10.20.0.0/16",
                ],
                "fileRoots": ["/media", "/srv/in..coming"],
                "copyAnnotations": ["example.com/trace-id", "example.com/*", "team-*", "*"],
            }
        )
        .obj(),
        id="worker-settings-of-every-form",
    ),
]


@pytest.mark.parametrize("mode", APPLY_MODES)
@pytest.mark.parametrize(("manifest", "expected"), REFUSED)
def test_apply_refuses_with_a_message_naming_the_field(
    cluster: ClusterBase,
    namespace: str,
    crds: None,
    manifest: dict[str, Any],
    expected: str,
    mode: tuple[str, ...],
) -> None:
    result = apply(cluster, namespace, manifest, mode)

    assert result.returncode != 0, f"accepted: {json.dumps(manifest)[:300]}"
    assert expected in result.stderr


@pytest.mark.parametrize("mode", APPLY_MODES)
@pytest.mark.parametrize("manifest", ACCEPTED)
def test_apply_accepts_what_is_within_the_limits(
    cluster: ClusterBase,
    namespace: str,
    crds: None,
    manifest: dict[str, Any],
    mode: tuple[str, ...],
) -> None:
    result = apply(cluster, namespace, manifest, mode)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", APPLY_MODES)
def test_a_1_mib_params_is_refused(
    cluster: ClusterBase, namespace: str, crds: None, mode: tuple[str, ...]
) -> None:
    """Server-side apply used to take it whole (no last-applied annotation to outgrow)."""
    manifest = custom_job(params={f"p{i:03d}": "x" * 8 * KIB for i in range(128)})

    result = apply(cluster, namespace, manifest, mode)

    assert result.returncode != 0
    assert "spec.params" in result.stderr
