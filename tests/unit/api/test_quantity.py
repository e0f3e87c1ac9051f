"""Memory quantities: Kubernetes' grammar in, exact byte counts out, and back."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from videoqueue.api import QUANTITY_PATTERN, format_bytes, parse_quantity

Ki, Mi, Gi = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("1000000", 1_000_000, id="plain-bytes"),
        pytest.param("512Mi", 512 * Mi, id="mebibytes"),
        pytest.param("2Gi", 2 * Gi, id="gibibytes"),
        pytest.param("1.5Gi", 3 * Gi // 2, id="fractional-binary"),
        pytest.param("1.5G", 1_500_000_000, id="fractional-decimal"),
        pytest.param("64k", 64_000, id="kilo-is-lower-case"),
        pytest.param("1Ki", Ki, id="kibibyte"),
        pytest.param("3Ti", 3 * 1024**4, id="tebibytes"),
        pytest.param("1Ei", 1024**6, id="exbibyte"),
        pytest.param("2E", 2 * 10**18, id="exabytes"),
        pytest.param("1e3", 1000, id="exponent"),
        pytest.param("1E+9", 10**9, id="exponent-with-sign"),
        pytest.param(".5Ki", 512, id="leading-dot"),
        pytest.param("5.", 5, id="trailing-dot"),
        pytest.param("0.5", 1, id="sub-byte-rounds-up"),
        pytest.param("1500m", 2, id="milli-rounds-up"),
        pytest.param("-1Ki", -Ki, id="negative"),
        pytest.param("+7", 7, id="explicit-plus"),
        pytest.param("123456789012345678901234567890", 123456789012345678901234567890, id="long"),
    ],
)
def test_parse_quantity(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


def test_parse_quantity_takes_integers_as_bytes() -> None:
    assert parse_quantity(4096) == 4096


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("2GB", id="two-letter-decimal-suffix"),
        pytest.param("2gi", id="lower-case-binary-suffix"),
        pytest.param("1K", id="upper-case-kilo"),
        pytest.param("Gi", id="suffix-without-number"),
        pytest.param(" 1Gi", id="leading-space"),
        pytest.param("1 Gi", id="inner-space"),
        pytest.param("1.2.3", id="two-dots"),
        pytest.param("1e999", id="exponent-out-of-range"),
    ],
)
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_parse_quantity_rejects_booleans() -> None:
    with pytest.raises(TypeError):
        parse_quantity(True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(512, "512", id="not-a-multiple"),
        pytest.param(Ki, "1Ki", id="kibibyte"),
        pytest.param(1536 * Mi, "1536Mi", id="largest-exact-binary-unit"),
        pytest.param(8 * Gi, "8Gi", id="gibibytes"),
        pytest.param(1_500_000_000, "1500M", id="decimal-when-binary-is-not-exact"),
        pytest.param(2_000, "2k", id="kilo"),
        pytest.param(-2 * Gi, "-2Gi", id="negative"),
    ],
)
def test_format_bytes(value: int, expected: str) -> None:
    assert format_bytes(value) == expected


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_format_bytes_round_trips(value: int) -> None:
    assert parse_quantity(format_bytes(value)) == value


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        pytest.param("512Mi", True, id="binary"),
        pytest.param("1.5G", True, id="decimal"),
        pytest.param("1000000", True, id="bytes"),
        pytest.param("1e9", True, id="exponent"),
        pytest.param("512m", False, id="milli-is-a-typo-for-memory"),
        pytest.param("-1Gi", False, id="negative"),
        pytest.param("1e-3", False, id="negative-exponent"),
        pytest.param("2GB", False, id="not-a-quantity"),
    ],
)
def test_schema_pattern_admits_memory_sizes_only(text: str, accepted: bool) -> None:
    assert bool(re.fullmatch(QUANTITY_PATTERN, text)) is accepted
    if accepted:
        assert parse_quantity(text) > 0
