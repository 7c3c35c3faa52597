"""The plain-HTTP listener (``http_redirect_addr``): a 301 to HTTPS, except ACME HTTP-01 tokens.

An ACME server proves control of a name by fetching
``http://<name>/.well-known/acme-challenge/<token>`` (RFC 8555 8.3) over plain HTTP, port 80.
cert-manager answers it with a solver pod behind an Ingress of its own (label
``acme.cert-manager.io/http01-solver: "true"``); the operator marks that Ingress's routes
``acme_http01_solver``. This listener serves such a request through the normal pipeline (the
same route matching, forwarding, access log and metrics as the HTTPS listener) and answers
every other request, as before, with a ``301`` to the same URL over HTTPS.

Pomerium itself does not do this: its plain-HTTP listener redirects everything (its autocert
answers only its own challenges there), and cert-manager's challenges pass because ACME servers
follow a redirect to ``https://`` on port 443 without checking the certificate. That fails when
HTTPS is not on port 443 (Let's Encrypt follows redirects to ports 80 and 443 only), with an
ACME server that does not follow redirects, and with ``downstream_mtls`` (an ACME server has no
client certificate); serving the token on plain HTTP does not.

What is served is narrow: ``GET`` and ``HEAD`` only, decided on the path as it is matched
(normalised: ``..``, ``%2e``, ``//`` and backslashes resolved first, so no spelling reaches
another route). The matched route must carry ``acme_http01_solver``, be public, and the
normalised path must lie under ``/.well-known/acme-challenge/``. The request is forwarded
without its ``Cookie`` header (a token fetch needs none) and without any sign-in or
client-certificate check: plain HTTP has no client certificate, and the route is public by
construction. Vallum's own endpoints (``/.vallum/*``, sign-in) are never served here.
"""

from __future__ import annotations

from vallum.core import config, routing
from vallum.core.request import RequestInfo
from vallum.proxy import pipeline


def solver_match(req: RequestInfo, table: config.RouteTable) -> routing.Match | None:
    """The match of ``req`` when this listener serves it (see module doc), else ``None``."""
    if req.method not in ("GET", "HEAD"):  # an ACME server only GETs (RFC 8555 8.3)
        return None
    if "/.well-known/" not in req.path and "%" not in req.path and "\\" not in req.path:
        return None  # (cheap: every spelling of the prefix has one of these)
    found = routing.match(table, req.host, req.path)
    if found is None or not solver_route(found.route):
        return None
    if not found.path.startswith(config.ACME_CHALLENGE_PREFIX):
        return None
    return found


def solver_route(route: config.Route) -> bool:
    """Whether ``route`` may be served on plain HTTP (its challenge paths only)."""
    return route.acme_http01_solver and route.allow_public_unauthenticated_access


class PlainHTTPGate:
    """The plain-HTTP listener's :class:`~vallum.proxy.pipeline.Gate`: forward ACME HTTP-01
    challenges to their solver route, redirect everything else to ``https_port``."""

    def __init__(self, inner: pipeline.Gate, https_port: int) -> None:
        self.inner = inner
        self.suffix = "" if https_port == 443 else f":{https_port}"

    async def intercept(
        self, req: RequestInfo, table: config.RouteTable
    ) -> pipeline.Respond | None:
        if solver_match(req, table) is None:
            return self.redirect(req)
        return None

    async def authorize(
        self, req: RequestInfo, match: routing.Match, table: config.RouteTable
    ) -> pipeline.Allow | pipeline.Respond:
        # The pipeline matched again; judge its match (the one forwarded), not intercept's.
        if not solver_route(match.route) or not match.path.startswith(
            config.ACME_CHALLENGE_PREFIX
        ):
            return self.redirect(req)
        return pipeline.ALLOW  # no gate headers: the client's Cookie is not forwarded

    def strip_request_headers(self) -> frozenset[str]:
        return self.inner.strip_request_headers() | {"cookie"}

    def redirect(self, req: RequestInfo) -> pipeline.Respond:
        """``301`` to the same host, path and query over HTTPS."""
        query = f"?{req.query}" if req.query else ""
        location = f"https://{req.host}{self.suffix}{req.path}{query}"
        page = pipeline.error(req, 301, "Use HTTPS.")
        return pipeline.Respond(page.status, (*page.headers, ("Location", location)), page.body)
