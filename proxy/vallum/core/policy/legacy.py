"""A route's whole access policy: Pomerium's legacy shorthands plus its ``policy``, compiled once.

The shorthands become the same rules Pomerium generates for them (``config/policy_ppl.go``):

    allow_public_unauthenticated_access  ``accept`` — and nothing else may be set (error)
    allow_any_authenticated_user         ``authenticated_user``
    allowed_domains: [d]                 ``domain: {is: d}``
    allowed_idp_claims: {k: [v]}         ``claim/k: v`` (one condition per value)
    allowed_users: [u]                   ``user: {is: u}`` or ``email: {is: u}``

each an ``or`` alternative, next to the rules of ``policy``. With ``downstream_mtls`` configured
(a client CA), ``invalid_client_certificate`` also holds for a request without a certificate,
and enforcement ``policy_with_default_deny`` (the default) adds a deny rule with it.

``compile_route_policy`` never raises: a route whose policy does not compile gets a policy
that denies every request and carries the error (fail closed, and says why).
"""

from __future__ import annotations

from typing import Any

from vallum.core.config import DownstreamMTLS, Route
from vallum.core.errors import PolicyError
from vallum.core.policy import compiler, parser
from vallum.core.policy.criteria import base
from vallum.core.policy.decision import Decision, Reason

PUBLIC = "allow_public_unauthenticated_access"


def _alternative(label: str, key: str, data: Any, path: str) -> parser.RuleExpr:
    name, _, sub_path = key.partition("/")
    expr = parser.CriterionExpr(key, name, sub_path, data, path)
    return parser.RuleExpr("allow", label, (parser.OperatorExpr("or", (expr,), path),), path)


def _strings(value: object, path: str) -> list[str]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{path}[{i}]", f"expected a non-empty string, got {item!r}")
    return items  # type: ignore[return-value]


def legacy_rules(route: Route) -> list[parser.RuleExpr]:
    """The allow rules that the route's legacy options stand for (public access excluded)."""
    rules: list[parser.RuleExpr] = []
    if route.allow_any_authenticated_user:
        rules.append(
            _alternative(
                "allow_any_authenticated_user",
                "authenticated_user",
                True,
                "allow_any_authenticated_user",
            )
        )
    for i, domain in enumerate(_strings(route.allowed_domains, "allowed_domains")):
        rules.append(
            _alternative("allowed_domains", "domain", {"is": domain}, f"allowed_domains[{i}]")
        )
    for claim, values in route.allowed_idp_claims:
        if not isinstance(claim, str) or not claim:
            raise PolicyError("allowed_idp_claims", f"a claim name must be a string, got {claim!r}")
        items = list(values) if isinstance(values, (list, tuple)) else [values]
        for j, value in enumerate(items):
            rules.append(
                _alternative(
                    "allowed_idp_claims",
                    f"claim/{claim}",
                    value,
                    f"allowed_idp_claims.{claim}[{j}]",
                )
            )
    for i, user in enumerate(_strings(route.allowed_users, "allowed_users")):
        path = f"allowed_users[{i}]"
        rules.append(_alternative("allowed_users", "user", {"is": user}, path))
        rules.append(_alternative("allowed_users", "email", {"is": user}, path))
    return rules


def _has_policy(data: object) -> bool:
    return data is not None and data != [] and data != {}


def _compile(route: Route, mtls: DownstreamMTLS | None) -> compiler.CompiledPolicy:
    client_ca = mtls is not None and bool(mtls.ca_pem)
    default_deny = client_ca and mtls is not None and mtls.enforcement == "policy_with_default_deny"
    options = base.Options(client_ca=client_ca)
    rules = legacy_rules(route)
    if route.allow_public_unauthenticated_access:
        if rules or _has_policy(route.policy):
            others = [
                name
                for name, used in (
                    ("allow_any_authenticated_user", route.allow_any_authenticated_user),
                    ("allowed_domains", bool(route.allowed_domains)),
                    ("allowed_idp_claims", bool(route.allowed_idp_claims)),
                    ("allowed_users", bool(route.allowed_users)),
                    ("policy", _has_policy(route.policy)),
                )
                if used
            ]
            raise PolicyError(
                PUBLIC,
                "cannot be combined with other access rules "
                f"({', '.join(others)}): a public route admits everyone",
            )
        rules.append(_alternative(PUBLIC, "accept", True, PUBLIC))
    rules.extend(parser.parse(route.policy, "policy"))
    if default_deny:
        rules.append(
            parser.RuleExpr(
                "deny",
                "downstream_mtls default deny",
                (
                    parser.OperatorExpr(
                        "or",
                        (
                            parser.CriterionExpr(
                                "invalid_client_certificate",
                                "invalid_client_certificate",
                                "",
                                True,
                                "downstream_mtls",
                            ),
                        ),
                        "downstream_mtls",
                    ),
                ),
                "downstream_mtls",
            )
        )
    policy = compiler.compile_rules(rules, options)
    if route.allow_public_unauthenticated_access and not default_deny:
        reason = Reason("public", f"{PUBLIC}: everyone is allowed without signing in", PUBLIC)
        return compiler.CompiledPolicy(
            policy.allow,
            policy.deny,
            policy.normalized,
            fixed=Decision(True, (reason,)),
            is_public=True,
        )
    return policy


def compile_route_policy(
    route: Route, *, downstream_mtls: DownstreamMTLS | None = None
) -> compiler.CompiledPolicy:
    """Compile the route's legacy options and ``policy`` into one policy. Never raises."""
    try:
        return _compile(route, downstream_mtls)
    except PolicyError as exc:
        error = exc
    except Exception as exc:  # a malformed Route value: still fail closed, with a message
        error = PolicyError("", f"cannot compile the route's policy: {type(exc).__name__}: {exc}")
    where = route.name or route.from_url or route.source or "route"
    message = f"the policy of {where} does not compile, so every request is denied: {error}"
    return compiler.CompiledPolicy(
        fixed=Decision(False, (Reason("policy-error", message, error.path),)), error=error
    )
