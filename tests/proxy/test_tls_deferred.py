"""tls_deferred: the layout self-check, what it refuses, and the verdict read back.

The end-to-end behaviour (invalid certificates reaching policy with ``verified=False``) is
tested with real handshakes in ``test_tls.py``."""

from __future__ import annotations

import ssl

from vallum.proxy import tls_deferred


def test_self_check_passes_on_this_cpython() -> None:
    assert tls_deferred.available()


def test_only_cert_optional_contexts_are_deferred() -> None:
    required = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    required.verify_mode = ssl.CERT_REQUIRED
    assert tls_deferred.defer_verification(required) is False
    assert not tls_deferred.is_deferred(required)
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert tls_deferred.defer_verification(plain) is False  # CERT_NONE asks for nothing
    optional = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    optional.verify_mode = ssl.CERT_OPTIONAL
    assert tls_deferred.defer_verification(optional) is True
    assert tls_deferred.is_deferred(optional)
    optional.verify_mode = ssl.CERT_OPTIONAL  # Python keeps the callback when the mode is set
    assert optional.verify_mode == ssl.CERT_OPTIONAL


def test_verdict_is_read_only_from_objects_whose_layout_checks_out() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fresh = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    assert tls_deferred.verify_result(fresh) == (0, "ok")
    assert tls_deferred.verify_result(object()) is None
    assert tls_deferred.verify_result(None) is None


def test_sni_context_switch_keeps_the_layout_check_valid() -> None:
    first = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    second = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    obj = first.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    obj.context = second  # what the SNI callback does
    assert tls_deferred.verify_result(obj) == (0, "ok")
