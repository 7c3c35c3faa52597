"""The identity gate: per request, who is calling and may they pass (the pipeline's ``Gate``).

For a matched route: downstream mTLS (Pomerium's default-deny rule for a missing or invalid
client certificate: 495), public routes, then the caller's identity (bearer token or session
cookie, refreshed when due), then the route's policy. Allowed requests are forwarded with the
identity assertion and claim headers (``pass_identity_headers``), the original user's assertion
when one arrived (``X-*-Jwt-Assertion-For``) and a renewed session cookie after a refresh.
Anonymous browsers are sent to sign in, other anonymous clients get 401, denied users 403 with
the reasons. Internal endpoints (``/.vallum/*``, JWKS) are answered by :mod:`.endpoints`.
"""

from __future__ import annotations

import asyncio
import logging

from vallum.core import claims, config, policy, routing
from vallum.core.identity import Identity
from vallum.core.request import RequestInfo
from vallum.proxy import metrics, pipeline, session_state
from vallum.proxy.identity import authenticate, context, endpoints, responses

log = logging.getLogger("vallum.identity")

_CLAIM_NAMES = ("email", "user", "groups", "name", "sub", "sid", "iss", "aud", "jti",
                "preferred-username", "given-name", "family-name", "picture", "roles")
BASE_STRIP = frozenset(
    {
        claims.ASSERTION_HEADER.lower(), claims.POMERIUM_ASSERTION_HEADER.lower(),
        claims.ASSERTION_FOR_HEADER.lower(), claims.POMERIUM_ASSERTION_FOR_HEADER.lower(),
        *(f"x-vallum-claim-{n}" for n in _CLAIM_NAMES),
        *(f"x-pomerium-claim-{n}" for n in _CLAIM_NAMES),
    }
)


def strip_names(settings: config.Settings | None) -> frozenset[str]:
    """Header names a client may never send upstream: assertions of both prefixes, and every
    claim header these settings (and common ones) produce, under both prefixes.

    The gate strips ``strip_names(None)``, the names no table changes; the names a table's
    ``jwt_claims_headers`` adds are stripped by the data plane for that very table
    (:class:`vallum.proxy.forward.Plans`, with every ``X-Vallum-*``/``X-Pomerium-*`` header),
    so a claim header added by a reload or a published table is never taken from a client."""
    names = set(BASE_STRIP) | {"cookie"}
    for header, claim in settings.jwt_claims_headers if settings else ():
        names.add(header.lower())
        compat = config.Settings(jwt_claims_headers=((header, claim),), pomerium_compatibility=True)
        names.update(n.lower() for n in claims.claim_header_names(header, compat))
        names.add(f"x-vallum-claim-{claim.lower()}")
        names.add(f"x-pomerium-claim-{claim.lower()}")
    return frozenset(names)


def _sign_in_wanted(settings: config.Settings) -> bool:
    """Whether the config asks for sign-in at all: a route that needs a user, or IdP settings.
    (A config of public routes only is complete without them: no warnings for it.)"""
    return bool(
        settings.idp_provider_url or settings.idp_client_id or settings.cookie_secret
        or settings.authenticate_service_url
        or any(not r.allow_public_unauthenticated_access for r in settings.routes)
    )


class IdentityGate:
    """The real :class:`~vallum.proxy.pipeline.Gate` (see module doc).

    Everything it knows of the configuration comes from the table of each request
    (:meth:`context_for`); ``settings``, the first configuration, is accepted for the
    :func:`~vallum.proxy.identity.build_gate` signature and shapes nothing."""

    def __init__(
        self, settings: config.Settings | None = None,
        state: session_state.SessionState | None = None,
    ) -> None:
        del settings  # (see the class doc: a later table must not be judged by the first)
        self._ctx: context.Context | None = None
        self._strip = strip_names(None)  # (the table's claim headers: see strip_names)
        self._announced: tuple[bool, tuple[str, ...]] | None = None
        self.resolver = authenticate.Resolver()
        self.state = state if state is not None else session_state.from_environment()
        """Revocations and refreshes shared by this Vallum's processes (kept across reloads)."""
        self._closing: set[asyncio.Task[None]] = set()

    def context_for(self, table: config.RouteTable) -> context.Context:
        ctx = self._ctx
        if ctx is None or ctx.checksum != table.checksum:
            ctx = context.Context.build(table, ctx, self.state)
            self._announce(_sign_in_wanted(table.settings), tuple(ctx.problems))
            if ctx.retired is not None:
                task = asyncio.get_running_loop().create_task(ctx.retired.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
                ctx.retired = None
            self._ctx = ctx
        return ctx

    def _announce(self, wanted: bool, problems: tuple[str, ...]) -> None:
        """Log what sign-in lacks when that changes, not for every table (``vallum
        controller`` publishes one per batch of Kubernetes changes)."""
        if self._announced == (wanted, problems):
            return
        self._announced = (wanted, problems)
        if wanted:
            for problem in problems:
                log.warning("identity: %s", problem)
        elif problems:
            log.info("identity: sign-in is not configured; every route is public")

    async def close(self) -> None:
        if self._ctx is not None and self._ctx.provider is not None:
            await self._ctx.provider.close()
        self.state.close()

    def strip_request_headers(self) -> frozenset[str]:
        return self._strip

    def intercepts(self, req: RequestInfo) -> bool:
        """Whether :meth:`intercept` may answer ``req``: Vallum's own paths (``/.vallum/*``,
        ``/.well-known/*``, the authenticate host's ``/.pomerium/*``)."""
        return req.path[:2] == "/."

    async def intercept(
        self, req: RequestInfo, table: config.RouteTable
    ) -> pipeline.Respond | None:
        if not self.intercepts(req):
            return None
        return await endpoints.handle(self, self.context_for(table), req)

    def authorize_now(
        self, req: RequestInfo, match: routing.Match, table: config.RouteTable
    ) -> pipeline.Allow | pipeline.Respond | None:
        """:meth:`authorize` when it needs no I/O, as it usually does not: a refused client
        certificate, a public route, or a caller whose session is known (or who has none).
        ``None``: the identity needs I/O (a bearer token to verify, a session cookie not seen
        yet or due for refresh): run :meth:`authorize`."""
        ctx = self.context_for(table)
        if ctx.settings.downstream_mtls is not None:  # (no call without client certificates)
            refused = client_certificate_refusal(ctx.settings, req)
            if refused is not None:
                return responses.invalid_client_certificate(req, refused)
        if match.route.allow_public_unauthenticated_access:
            header = req.headers.get("cookie")  # upstream_cookie(ctx, req), inline (hot path)
            cookie = None if header is None else authenticate.upstream_cookie(ctx, header)
            return pipeline.ALLOW if cookie is None else pipeline.Allow(request_headers=cookie)
        resolved = self.resolver.resolve_now(ctx, req)
        if resolved is None:
            return None
        return self._judge(ctx, req, match, resolved)

    async def authorize(
        self, req: RequestInfo, match: routing.Match, table: config.RouteTable
    ) -> pipeline.Allow | pipeline.Respond:
        quick = self.authorize_now(req, match, table)
        if quick is not None:
            return quick
        ctx = self.context_for(table)
        return self._judge(ctx, req, match, await self.resolver.resolve(ctx, req))

    def _judge(
        self, ctx: context.Context, req: RequestInfo, match: routing.Match,
        resolved: authenticate.Resolved,
    ) -> pipeline.Allow | pipeline.Respond:
        """The route's policy on the resolved caller: forward with the identity headers, or
        answer (sign in, 401, 403, 495)."""
        route = match.route
        who = resolved.identity
        compiled = ctx.compiled_policy(match.route_index, route)
        decision = policy.evaluate(compiled, req, who)
        if decision.allowed:
            if ctx.minter is None and who is not None and _passes_identity(ctx, route):
                return responses.error(  # never forward without the assertion it asked for
                    req, 503, "Identity assertions are not configured correctly (see the log)."
                )
            return pipeline.Allow(
                request_headers=self.upstream_headers(ctx, route, req, who),
                response_headers=(
                    tuple(("Set-Cookie", c) for c in resolved.set_cookies)
                    if resolved.set_cookies else ()
                ),
                identity=who,
            )
        if any(_certificate_reason(r) for r in decision.reasons):
            return responses.invalid_client_certificate(req, _certificate_problem(req))
        if decision.needs_login and who is None:
            return self.sign_in_needed(ctx, req, resolved)
        return responses.forbidden(req, [r.message for r in decision.reasons])

    def upstream_headers(
        self, ctx: context.Context, route: config.Route, req: RequestInfo, who: Identity | None,
    ) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        out.extend(upstream_cookie(ctx, req) or ())
        minter = ctx.minter
        if minter is None:
            return tuple(out)
        if who is not None and _passes_identity(ctx, route):
            out.extend(minter.identity_headers(who, req.host))
        if (
            "x-vallum-jwt-assertion" in req.headers or "x-pomerium-jwt-assertion" in req.headers
            or "x-vallum-jwt-assertion-for" in req.headers
            or "x-pomerium-jwt-assertion-for" in req.headers
        ):
            out.extend(minter.original_user_headers(req.headers))
        return tuple(out)

    def sign_in_needed(
        self, ctx: context.Context, req: RequestInfo, resolved: authenticate.Resolved
    ) -> pipeline.Respond:
        """302 to sign in for a browser, 401 for everyone else."""
        if resolved.bearer_error is not None:
            return responses.unauthenticated(req, f"The bearer token was refused: "
                                                  f"{resolved.bearer_error}")
        if not ctx.can_sign_in:
            return responses.error(
                req, 503, "Sign-in is not configured correctly on this Vallum (see its log)."
            )
        if not responses.wants_html(req) or req.method not in ("GET", "HEAD"):
            return responses.unauthenticated(req, "Sign in first (no valid session or token).")
        metrics.denied("sign_in_required")
        return endpoints.sign_in_redirect(ctx, req, return_url(req))


def upstream_cookie(
    ctx: context.Context, req: RequestInfo
) -> tuple[tuple[str, str], ...] | None:
    """The client's ``Cookie`` header without Vallum's own cookies (``None``: nothing to send)."""
    header = req.headers.get("cookie")
    return None if header is None else authenticate.upstream_cookie(ctx, header)


def _passes_identity(ctx: context.Context, route: config.Route) -> bool:
    passing = route.pass_identity_headers
    return ctx.settings.pass_identity_headers if passing is None else passing


def _certificate_reason(reason: policy.Reason) -> bool:
    """A denial because of the client certificate: Pomerium answers those with 495."""
    return reason.code == "invalid-client-certificate" or (
        reason.code == "deny-rule" and reason.path.endswith("invalid_client_certificate")
    )


def _certificate_problem(req: RequestInfo) -> str:
    """What is wrong with the client certificate, for the 495 page."""
    cert = req.client_cert
    if cert is None:
        return "no client certificate was presented"
    if not cert.verified:
        return cert.error or "the client certificate is not trusted"
    return "the client certificate does not satisfy this route's policy"


def return_url(req: RequestInfo) -> str:
    host = req.headers.get("host") or req.host
    query = f"?{req.query}" if req.query else ""
    return f"{req.scheme}://{host}{req.path}{query}"


def client_certificate_refusal(settings: config.Settings, req: RequestInfo) -> str | None:
    """Why the client certificate fails Pomerium's default-deny rule (``None``: it passes).

    Applies with ``enforcement: policy_with_default_deny`` (the default) and, as a second line
    behind the TLS handshake, ``reject_connection``; with ``policy`` the route's policy decides
    (``client_certificate`` / ``invalid_client_certificate`` criteria).
    """
    mtls = settings.downstream_mtls
    if mtls is None or not mtls.ca_pem or mtls.enforcement == "policy":
        return None
    cert = req.client_cert
    if cert is None:
        return "no client certificate was presented"
    if not cert.verified:
        return cert.error or "the client certificate is not trusted"
    return None
