"""Upstream TLS: one client ``SSLContext`` per route TLS profile, built once and reused.

Routes with the same upstream TLS options (Pomerium's ``tls_skip_verify``, ``tls_server_name``,
``tls_custom_ca``, ``tls_client_cert``/``tls_client_key``) share a context, and therefore a
connection pool. The cache is keyed on the *content* of those options, so a reload that brings
new PEMs (a rotated client certificate, a new CA) gets a new context without a restart, and
:meth:`UpstreamTLS.retain` drops contexts no route of the current table uses any more.

Trust: ``tls_custom_ca`` *replaces* the system trust store for its route (as in Pomerium);
otherwise the system store is used, which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``, plus the
global ``certificate_authority`` when set. Client keys are loaded through a private temporary
directory removed right after loading (see :func:`vallum.proxy.tls.load_cert_chain`); they are
never logged.
"""

from __future__ import annotations

import ssl

from vallum.core import config, errors
from vallum.proxy import tls

Profile = tuple[bool, str | None, str | None, str | None, str | None]
_Key = tuple[Profile, str | None]


class UpstreamTLS:
    """Client TLS contexts for upstream connections, cached by route TLS profile."""

    def __init__(self, certificate_authority_pem: str | None = None) -> None:
        self._contexts: dict[_Key, ssl.SSLContext] = {}
        self._extra_ca = certificate_authority_pem

    def context_for(self, route: config.Route) -> ssl.SSLContext:
        """The context for ``route``'s upstream TLS options (built on first use, then cached).

        Raises :class:`ConfigError` naming the route's option when a CA or client certificate
        cannot be loaded.
        """
        key = (route.upstream_tls_profile, self._extra_ca)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = _build(route, self._extra_ca)
        return ctx

    @staticmethod
    def server_hostname(route: config.Route, upstream: config.Upstream) -> str:
        """The name sent as SNI and checked against the certificate: ``tls_server_name`` or host."""
        return route.tls_server_name or upstream.host

    def retain(self, table: config.RouteTable) -> None:
        """Forget contexts no route of ``table`` uses (call after each swap)."""
        self._extra_ca = table.settings.certificate_authority_pem
        wanted = {(r.upstream_tls_profile, self._extra_ca) for r in table.settings.routes}
        for key in [k for k in self._contexts if k not in wanted]:
            del self._contexts[key]

    def __len__(self) -> int:
        return len(self._contexts)


def _build(route: config.Route, extra_ca: str | None) -> ssl.SSLContext:
    place = route.source or route.from_url
    try:
        if route.tls_custom_ca_pem:
            ctx = ssl.create_default_context(cadata=route.tls_custom_ca_pem)
        else:
            ctx = ssl.create_default_context()
            if extra_ca:
                ctx.load_verify_locations(cadata=extra_ca)
    except (ssl.SSLError, ValueError) as exc:
        option = "tls_custom_ca" if route.tls_custom_ca_pem else "certificate_authority"
        reason = tls.describe_error(exc)
        raise errors.ConfigError([f"{place}: {option}: cannot load CA: {reason}"]) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if route.tls_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if route.tls_client_cert_pem or route.tls_client_key_pem:
        if not (route.tls_client_cert_pem and route.tls_client_key_pem):
            raise errors.ConfigError(
                [f"{place}: tls_client_cert and tls_client_key must be given together"]
            )
        try:
            tls.load_cert_chain(ctx, route.tls_client_cert_pem, route.tls_client_key_pem)
        except (ssl.SSLError, ValueError, OSError) as exc:
            # OpenSSL's reason names the problem, never the key material.
            raise errors.ConfigError(
                [f"{place}: tls_client_cert/tls_client_key: cannot load: {tls.describe_error(exc)}"]
            ) from None
    return ctx
