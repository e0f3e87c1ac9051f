"""The worker's reading of s3:// URLs and of the queue's storage settings (no server needed:
the transfers themselves are in test_s3.py, against a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker import harness  # noqa: F401 - puts videoqueue_worker on sys.path
from videoqueue.api.storage import (
    ENV_S3_ADDRESSING_STYLE,
    ENV_S3_CREDENTIALS_DIR,
    ENV_S3_ENDPOINT,
    ENV_S3_MULTIPART_THRESHOLD_BYTES,
    ENV_S3_REGION,
)
from videoqueue_worker.errors import ExitCode, WorkerError
from videoqueue_worker.s3 import (
    DEFAULT_MULTIPART_THRESHOLD,
    MAX_PARTS,
    S3Object,
    S3Settings,
    _part_size,
    parse_s3_url,
)

FIELD = "spec.input.url"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("s3://media/in.mp4", S3Object("media", "in.mp4"), id="plain"),
        pytest.param("S3://media/a/b c.mp4", S3Object("media", "a/b c.mp4"), id="key-as-written"),
        pytest.param("s3://my.media-1/x", S3Object("my.media-1", "x"), id="dots-and-dashes"),
        pytest.param("s3://media/out/", S3Object("media", "out/"), id="prefix"),
    ],
)
def test_parse_s3_url(url: str, expected: S3Object) -> None:
    assert parse_s3_url(url, field=FIELD, directory_ok=True) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("s3://Media/in.mp4", "is not an S3 bucket name", id="upper-case"),
        pytest.param("s3://ab/in.mp4", "is not an S3 bucket name", id="too-short"),
        pytest.param("s3://10.0.0.1/in.mp4", "is not an S3 bucket name", id="ip-address"),
        pytest.param("s3://a..b/in.mp4", "is not an S3 bucket name", id="double-dot"),
        pytest.param("s3://media", "needs a key after the bucket", id="no-key"),
        pytest.param("s3://media/", "needs a key after the bucket", id="empty-key"),
        pytest.param("s3://media/" + "k" * 1025, "longer than S3's 1024 bytes", id="long-key"),
    ],
)
def test_malformed_s3_urls_are_invalid(url: str, message: str) -> None:
    with pytest.raises(WorkerError) as caught:
        parse_s3_url(url, field=FIELD, directory_ok=True)

    assert caught.value.exit_code == ExitCode.INVALID
    assert caught.value.field == FIELD
    assert message in caught.value.message


def test_a_prefix_where_a_key_is_needed() -> None:
    with pytest.raises(WorkerError, match="needs a key"):
        parse_s3_url("s3://media/out/", field=FIELD, directory_ok=False)


def test_settings_from_the_operators_env(tmp_path: Path) -> None:
    settings = S3Settings.from_env(
        {
            ENV_S3_ENDPOINT: "http://seaweedfs.storage:8333",
            ENV_S3_REGION: "eu-west-3",
            ENV_S3_ADDRESSING_STYLE: "virtual",
            ENV_S3_CREDENTIALS_DIR: str(tmp_path),
            ENV_S3_MULTIPART_THRESHOLD_BYTES: str(8 << 20),
        }
    )

    assert settings == S3Settings(
        region="eu-west-3",
        addressing_style="virtual",
        credentials_dir=tmp_path,
        endpoint="http://seaweedfs.storage:8333",
        multipart_threshold=8 << 20,
    )


def test_no_credentials_dir_means_no_storage() -> None:
    assert S3Settings.from_env({ENV_S3_ENDPOINT: "http://s3:8333"}) is None


def test_defaults(tmp_path: Path) -> None:
    settings = S3Settings.from_env({ENV_S3_CREDENTIALS_DIR: str(tmp_path)})

    assert settings is not None
    assert (settings.region, settings.addressing_style, settings.endpoint) == (
        "us-east-1",
        "path",
        None,
    )
    assert settings.multipart_threshold == DEFAULT_MULTIPART_THRESHOLD


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        pytest.param(ENV_S3_ADDRESSING_STYLE, "dns", "must be path or virtual", id="style"),
        pytest.param(ENV_S3_ENDPOINT, "s3.internal:8333", "http(s)://", id="endpoint"),
        pytest.param(ENV_S3_MULTIPART_THRESHOLD_BYTES, "1000", "at least 5242880", id="small"),
    ],
)
def test_bad_settings_are_invalid(tmp_path: Path, name: str, value: str, message: str) -> None:
    with pytest.raises(WorkerError) as caught:
        S3Settings.from_env({ENV_S3_CREDENTIALS_DIR: str(tmp_path), name: value})

    assert caught.value.field == name
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(1 << 30, DEFAULT_MULTIPART_THRESHOLD, id="1GiB-in-64MiB-parts"),
        pytest.param(
            MAX_PARTS * DEFAULT_MULTIPART_THRESHOLD + 1,
            DEFAULT_MULTIPART_THRESHOLD + 1,
            id="over-10000-parts-grows-the-part",
        ),
    ],
)
def test_part_size_keeps_within_10000_parts(size: int, expected: int, tmp_path: Path) -> None:
    settings = S3Settings(region="us-east-1", addressing_style="path", credentials_dir=tmp_path)

    part = _part_size(settings, size)

    assert part == expected
    assert -(-size // part) <= MAX_PARTS
