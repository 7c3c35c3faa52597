"""Session cookies: sealing, tampering, expiry, attributes and splitting over several cookies."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from vallum.core import config, errors, identity
from vallum.proxy import sessions

SECRET = base64.b64encode(b"k" * 32).decode()


def _settings(**kw: object) -> config.Settings:
    kw.setdefault("cookie_secret", SECRET)
    return config.Settings(**kw)  # type: ignore[arg-type]


def _cookies(settings: config.Settings | None = None) -> sessions.SessionCookies:
    settings = settings or _settings()
    return sessions.SessionCookies(settings, sessions.Sealer(sessions.secret_bytes(settings)))


def _groups(count: int) -> tuple[str, ...]:
    """Group ids as Entra ID gives them (UUIDs: they do not compress much)."""
    return tuple(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"group-{i}")) for i in range(count))


def _session(groups: int = 2, ttl: float = 3600) -> sessions.Session:
    exp = time.time() + ttl
    ident = identity.Identity(
        user="alice", email="alice@example.test", name="Alice",
        groups=_groups(groups),
        claims={"sub": "alice", "org": {"team": "red"}, "groups": list(_groups(groups))},
        session_id="sid-1",
        expires_at=exp,
    )
    return sessions.Session(ident, refresh_token="rt-1", expires_at=exp,
                            refresh_at=time.time() + 60)


def _jar(set_cookies: list[str]) -> dict[str, str]:
    jar = {}
    for header in set_cookies:
        name, _, rest = header.partition("=")
        value = rest.split(";")[0]
        if "Max-Age=0" not in header:
            jar[name] = value
    return jar


def test_round_trip_keeps_identity_and_refresh_token() -> None:
    cookies = _cookies()
    session = _session()
    back = cookies.read(_jar(cookies.set_headers(session)))
    assert back is not None
    assert back.identity == session.identity
    assert back.refresh_token == "rt-1"
    assert back.refresh_at == session.refresh_at


def test_cookie_attributes_follow_settings() -> None:
    settings = _settings(
        cookie_name="_sess", cookie_domain="example.test", cookie_same_site="strict"
    )
    header = _cookies(settings).set_headers(_session())[0]
    assert header.startswith("_sess=")
    for part in ("Path=/", "Domain=example.test", "Secure", "HttpOnly", "SameSite=Strict"):
        assert part in header.split("; ")
    max_age = int(header.split("Max-Age=")[1].split(";")[0])
    assert 3590 <= max_age <= 3600


def test_tampered_cookie_is_no_session() -> None:
    cookies = _cookies()
    value = _jar(cookies.set_headers(_session()))["_vallum"]
    flipped = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    assert cookies.read({"_vallum": flipped}) is None
    assert cookies.read({"_vallum": "garbage"}) is None


def test_other_secret_cannot_read() -> None:
    value = _jar(_cookies().set_headers(_session()))["_vallum"]
    other = _settings(cookie_secret=base64.b64encode(b"x" * 32).decode())
    assert _cookies(other).read({"_vallum": value}) is None


def test_cookie_sealed_for_another_name_is_rejected() -> None:
    value = _jar(_cookies().set_headers(_session()))["_vallum"]
    assert _cookies(_settings(cookie_name="_other")).read({"_other": value}) is None


def test_expired_session_is_rejected() -> None:
    cookies = _cookies()
    session = _session(ttl=5)
    value = cookies.encode(session)
    with pytest.raises(errors.IdentityError, match="expired"):
        sessions.Sealer(sessions.secret_bytes(_settings())).open(
            "session", value, aad="_vallum", now=time.time() + 10
        )


def test_three_hundred_groups_split_into_chunks_under_4k() -> None:
    cookies = _cookies()
    headers = cookies.set_headers(_session(groups=300))
    assert len(headers) > 1
    for header in headers:
        assert len(header.encode()) < 4096
    jar = _jar(headers)
    assert set(jar) == {f"_vallum_{i}" for i in range(len(headers))}
    back = cookies.read(jar)
    assert back is not None
    assert len(back.identity.groups) == 300


def test_missing_chunk_is_no_session() -> None:
    cookies = _cookies()
    jar = _jar(cookies.set_headers(_session(groups=300)))
    del jar["_vallum_1"]
    assert cookies.read(jar) is None


def test_shrinking_session_clears_stale_chunks() -> None:
    cookies = _cookies()
    big = _jar(cookies.set_headers(_session(groups=300)))
    headers = cookies.set_headers(_session(), present=big)
    cleared = {h.split("=")[0] for h in headers if "Max-Age=0" in h}
    assert cleared == set(big)
    assert cookies.read(_jar(headers)) is not None


def test_clear_headers_remove_everything() -> None:
    headers = _cookies().clear_headers(present=["_vallum_0", "_vallum_1", "other"])
    assert sorted(h.split("=")[0] for h in headers) == ["_vallum", "_vallum_0", "_vallum_1"]
    assert all("Max-Age=0" in h for h in headers)


def test_sealer_purposes_do_not_mix() -> None:
    sealer = sessions.Sealer(b"s" * 32)
    token = sealer.seal("state", {"a": 1}, 60)
    assert sealer.open("state", token) == {"a": 1}
    with pytest.raises(errors.IdentityError, match="forged"):
        sealer.open("handoff", token)


@pytest.mark.parametrize("secret", [None, "c2hvcnQ=", "short"])
def test_missing_or_short_secret_is_a_config_error(secret: str | None) -> None:
    with pytest.raises(errors.ConfigError, match="cookie_secret"):
        sessions.secret_bytes(config.Settings(cookie_secret=secret))


def test_dev_mode_makes_a_random_secret() -> None:
    assert len(sessions.secret_bytes(config.Settings(dev_mode=True))) == 32


def test_parse_cookies_first_wins() -> None:
    assert sessions.parse_cookies('a=1; b="2"; a=3; junk; =x') == {"a": "1", "b": "2"}


def test_compressed_tokens_round_trip_and_bind_their_version() -> None:
    sealer = sessions.Sealer(b"s" * 32)
    payload = {"groups": ["same-group-name"] * 200}
    small = sealer.seal("handoff", payload, 60, aad="app.example.test", compress=True)
    plain = sealer.seal("handoff", payload, 60, aad="app.example.test")
    assert len(small) < len(plain) / 5
    assert sealer.open("handoff", small, aad="app.example.test") == payload
    with pytest.raises(errors.IdentityError, match="forged"):
        sealer.open("handoff", small, aad="other.example.test")
    raw = base64.urlsafe_b64decode(small + "=" * (-len(small) % 4))
    relabelled = base64.urlsafe_b64encode(b"\x01" + raw[1:]).rstrip(b"=").decode()
    with pytest.raises(errors.IdentityError, match="forged"):
        sealer.open("handoff", relabelled, aad="app.example.test")
