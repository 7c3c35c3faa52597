"""Deferred client-certificate verification: let the request reach policy, as Pomerium does.

Python's ``ssl`` has no verify callback, so with ``CERT_OPTIONAL`` OpenSSL aborts the handshake
when a presented client certificate fails verification — the request never reaches the policy
(no ``invalid_client_certificate`` reason, no error page). Pomerium's default enforcement,
``policy_with_default_deny``, instead lets the request in and denies it with a page.

This module gets that behaviour without a second verifier: OpenSSL still verifies the chain
(CA bundle, CRL, partial chains) exactly as before, but a verify callback installed through
``ctypes`` tells it to *continue* on errors. OpenSSL keeps the verdict on the connection
(``SSL_get_verify_result``), and :func:`verify_result` reads it after the handshake, so
``tls.client_certificate`` can report ``verified=False`` with OpenSSL's own reason and the policy
denies.

It depends on CPython's private object layout (the ``SSL_CTX*`` right after the object header of
an ``SSLContext``; ``SSL*`` and the owning context after the socket field of ``_ssl._SSLSocket``),
so :func:`available` proves the layout on a probe object before anything is trusted: the context
field read from a probe ``_SSLSocket`` must be the probe ``SSLContext`` itself, and OpenSSL must
name the same ``SSL_CTX`` and report the verify mode Python set. If any check fails (another
Python, a static OpenSSL), deferral is off and invalid certificates keep failing the handshake —
closed, never open. Every connection re-checks that the context field matches before reading.
"""

from __future__ import annotations

import _ssl
import ctypes
import functools
import logging
import ssl
import sys
import weakref
from typing import Any

log = logging.getLogger("vallum.proxy.tls")

_HEAD = object.__basicsize__
_PTR = ctypes.sizeof(ctypes.c_void_p)
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_SSL_SOCKET: type = getattr(_ssl, "_SSLSocket", type(None))
_deferred: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def _continue_on_error(_preverify_ok: int, _store_ctx: int) -> int:
    """OpenSSL verify callback: continue; OpenSSL keeps the verdict on the ``SSL``."""
    return 1


_continue = _VERIFY_CB(_continue_on_error)  # module-level: must outlive every context


def _read_pointer(obj: object, slot: int) -> int:
    """The ``slot``-th pointer field after the object header of ``obj`` (0 if NULL)."""
    return ctypes.c_void_p.from_address(id(obj) + _HEAD + slot * _PTR).value or 0


class _OpenSSL:
    """The few libssl functions we call, resolved through the ``_ssl`` extension's own link."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(_ssl.__file__)
        self.set_verify = lib.SSL_CTX_set_verify
        self.set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
        self.set_verify.restype = None
        self.get_verify_mode = lib.SSL_CTX_get_verify_mode
        self.get_verify_mode.argtypes = [ctypes.c_void_p]
        self.get_verify_mode.restype = ctypes.c_int
        self.get_ssl_ctx = lib.SSL_get_SSL_CTX
        self.get_ssl_ctx.argtypes = [ctypes.c_void_p]
        self.get_ssl_ctx.restype = ctypes.c_void_p
        self.get_verify_result = lib.SSL_get_verify_result
        self.get_verify_result.argtypes = [ctypes.c_void_p]
        self.get_verify_result.restype = ctypes.c_long
        self.error_string = lib.X509_verify_cert_error_string
        self.error_string.argtypes = [ctypes.c_long]
        self.error_string.restype = ctypes.c_char_p


def _ssl_pointer(sslobj: Any) -> int:
    """``SSL*`` of an ``_ssl._SSLSocket``, or 0 unless its context field proves the layout."""
    if type(sslobj) is not _SSL_SOCKET:
        return 0
    if _read_pointer(sslobj, 2) != id(getattr(sslobj, "context", None)):
        return 0
    return _read_pointer(sslobj, 1)


@functools.cache
def _openssl() -> _OpenSSL | None:
    if sys.implementation.name != "cpython" or not (3, 10) <= sys.version_info[:2] <= (3, 13):
        return None
    try:
        lib = _OpenSSL()
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sslobj = probe.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)._sslobj  # type: ignore[attr-defined]
        ssl_ptr = _ssl_pointer(sslobj)
        ctx_ptr = _read_pointer(probe, 0)
        if not ssl_ptr or not ctx_ptr or lib.get_ssl_ctx(ssl_ptr) != ctx_ptr:
            return None
        for mode, expected in ((ssl.CERT_OPTIONAL, 1), (ssl.CERT_REQUIRED, 3)):
            probe.verify_mode = mode
            if lib.get_verify_mode(ctx_ptr) != expected:
                return None
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    return lib


def available() -> bool:
    """Whether deferral works on this interpreter (checked once, on a probe object)."""
    return _openssl() is not None


def defer_verification(ctx: ssl.SSLContext) -> bool:
    """Make ``ctx`` finish handshakes with invalid client certificates, keeping the verdict.

    Only for ``CERT_OPTIONAL`` contexts (the policy modes). Returns ``False`` (and changes
    nothing) when deferral is unavailable.
    """
    lib = _openssl()
    if lib is None or ctx.verify_mode != ssl.CERT_OPTIONAL:
        return False
    ctx_ptr = _read_pointer(ctx, 0)
    if not ctx_ptr or lib.get_verify_mode(ctx_ptr) != 1:
        return False
    lib.set_verify(ctx_ptr, 1, _continue)
    _deferred.add(ctx)
    return True


def is_deferred(ctx: ssl.SSLContext) -> bool:
    """Whether :func:`defer_verification` was applied to ``ctx``."""
    return ctx in _deferred


def verify_result(ssl_object: Any) -> tuple[int, str] | None:
    """OpenSSL's verdict on the peer certificate: ``(0, "ok")`` or an error code and its text.

    ``None`` when it cannot be read safely (the caller treats that as unverified).
    """
    lib = _openssl()
    if lib is None:
        return None
    sslobj = getattr(ssl_object, "_sslobj", ssl_object)
    ssl_ptr = _ssl_pointer(sslobj)
    if not ssl_ptr:
        return None
    code = int(lib.get_verify_result(ssl_ptr))
    text = lib.error_string(code)
    return code, (text.decode(errors="replace") if text else f"error {code}")
