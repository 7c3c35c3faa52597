"""The value forms in vallum.core.config: durations, upstream URLs, PEM, claim headers, checksum."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.certs import TestCA
from vallum.core import config


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("2h45m", 9900.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("+5s", 5.0),
        ("10us", 1e-5),
        (15, 15.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert config.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["fast", "", "30", "-5s", "1d", "s", "5 s", -1, True, None, [1]])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        config.parse_duration(value)


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_parse_duration_sums_go_units(h: int, m: int, s: int) -> None:
    assert config.parse_duration(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s


def test_parse_upstream() -> None:
    up = config.parse_upstream("http://127.0.0.1:8000")
    assert (up.scheme, up.host, up.port, up.path, up.weight) == ("http", "127.0.0.1", 8000, "", 1)
    up = config.parse_upstream("https://Backend.internal/base/,7")
    assert (up.scheme, up.host, up.port, up.path, up.weight) == (
        "https",
        "backend.internal",
        443,
        "/base",
        7,
    )
    assert config.parse_upstream("http://[::1]:81").host == "::1"
    assert config.parse_upstream("http://x").port == 80


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tcp://x:22", "http:// or https://"),
        ("x:80", "http:// or https://"),
        ("http://", "no host"),
        ("http://x:99999", "invalid upstream"),
        ("http://x,0", "weight"),
        ("http://x,abc", "weight"),
        ("http://x/?a=1", "query"),
        ("http://user:pw@x", "user"),
    ],
)
def test_parse_upstream_refuses(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config.parse_upstream(value)


def test_parse_pem_takes_raw_or_base64(test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.example.test")
    raw = config.parse_pem(leaf.cert_pem, "certificate")
    assert raw.startswith("-----BEGIN CERTIFICATE-----")
    encoded = base64.b64encode(leaf.cert_pem.encode()).decode()
    assert config.parse_pem(encoded, "certificate") == raw
    key = config.parse_pem(base64.b64encode(leaf.key_pem.encode()).decode(), "private key")
    assert "PRIVATE KEY" in key
    assert "X509 CRL" in config.parse_pem(test_ca.crl_pem([leaf]), "crl")


def test_parse_pem_refuses(test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.example.test")
    with pytest.raises(ValueError, match="PEM or base64"):
        config.parse_pem("not pem at all!", "certificate")
    with pytest.raises(ValueError, match="does not decode to PEM"):
        config.parse_pem(base64.b64encode(b"hello").decode(), "certificate")
    with pytest.raises(ValueError, match="not a valid PEM private key"):
        config.parse_pem(leaf.cert_pem, "private key")
    with pytest.raises(ValueError, match="not a valid PEM certificate"):
        config.parse_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "certificate"
        )


@pytest.mark.parametrize(
    ("claim", "header"),
    [
        ("email", "X-Pomerium-Claim-Email"),
        ("given_name", "X-Pomerium-Claim-Given-Name"),
        ("groups", "X-Pomerium-Claim-Groups"),
    ],
)
def test_claim_header_name(claim: str, header: str) -> None:
    assert config.claim_header_name(claim) == header


def test_checksum_is_stable_and_sensitive() -> None:
    up = (config.parse_upstream("http://127.0.0.1:8000"),)
    a = config.Settings(routes=(config.Route("https://a", config.Host("a"), up),))
    b = config.Settings(routes=(config.Route("https://a", config.Host("a"), up),))
    c = config.Settings(routes=(config.Route("https://a", config.Host("a"), up, timeout=5),))
    assert a.checksum() == b.checksum()
    assert a.checksum() != c.checksum()
    assert len(a.checksum()) == 16
