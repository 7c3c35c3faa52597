"""The identity assertion's claims and the identity headers, computed purely.

Why this module exists: upstream apps and libraries already verify Pomerium's assertion
(``X-Pomerium-Jwt-Assertion``). Producing *exactly* that payload lets them trust Vallum with no
change. Signing lives in the shell (:mod:`vallum.proxy.jwt`); here is only what goes into the
token and into the ``X-*-Claim-*`` headers, as plain data, so it can be tested without keys.

The payload (Pomerium's ``headers_evaluator_evaluation.go``, checked against its source):

=========  =====================================================================================
``iss``    the route host (``jwt_issuer_format: hostOnly``, the default) or ``https://host/``
           (``jwt_issuer_format: uri``)
``aud``    the route host (a string, never a list)
``jti``    a fresh UUID4
``iat``    issue time, whole seconds
``exp``    ``iat + 300`` (five minutes); there is no ``nbf``, as in Pomerium
``sub``    the user id (same as ``user``)
``user``   the user id
``email``  the user's email (``""`` when unknown)
``groups`` a list, ``[]`` when none (never ``null``: Pomerium issue 5393), filtered by
           ``jwt_groups_filter`` when that is set
``sid``    the session id
``name``   the user's name (``""`` when unknown)
=========  =====================================================================================

Extra claims: every claim named by ``jwt_claims_headers`` that is not one of the base claims above
is copied from the provider's claims as a string (lists joined with ``,``, as Pomerium does); a
base claim is never overridden.

Claim headers (:func:`claim_headers`): for each ``(header, claim)`` pair of
``Settings.jwt_claims_headers`` the header carries the claim's value from the payload, rendered as
Pomerium renders it (lists joined with ``,``; a missing claim gives an empty value). Headers in
the list form (``x-pomerium-claim-<claim>`` or ``x-vallum-claim-<claim>``) are always sent as
``X-Vallum-Claim-<Claim>`` and, with ``pomerium_compatibility``, also as
``X-Pomerium-Claim-<Claim>``; headers named freely in the map form are sent under that name.

Original user context (Pomerium's ``X-Pomerium-Jwt-Assertion-For``): an assertion that arrives
with a request (the upstream forwarded the one it got) is carried on as
``X-Vallum-Jwt-Assertion-For`` (and ``X-Pomerium-Jwt-Assertion-For``); an incoming ``-For`` value
wins over an incoming assertion. The value is the original token unchanged, so the last upstream
verifies it against the same JWKS. Unlike Pomerium, Vallum only carries a token it verified
(signature by one of its keys, not expired); see :mod:`vallum.proxy.jwt`.
:func:`identity_from_claims` turns such a verified payload back into an :class:`Identity`.

Deviations from Pomerium (on purpose): ``email``/``name`` come from the signed-in identity (the
provider's claims), not from a directory sync; a claim whose value is an object is rendered as
compact JSON, where Pomerium would print Go's ``map[...]``; CR/LF in header values become spaces;
``-For`` carries only verified tokens.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vallum.core import config, identity

ASSERTION_LIFETIME = 300
"""Seconds from ``iat`` to ``exp``: Pomerium's five minutes."""

BASE_CLAIMS = frozenset(
    {"iss", "aud", "jti", "iat", "exp", "sub", "user", "email", "groups", "sid", "name"}
)
"""Claims every assertion has; ``jwt_claims_headers`` can name them but never override them."""

ASSERTION_HEADER = "X-Vallum-Jwt-Assertion"
POMERIUM_ASSERTION_HEADER = "X-Pomerium-Jwt-Assertion"
ASSERTION_FOR_HEADER = "X-Vallum-Jwt-Assertion-For"
POMERIUM_ASSERTION_FOR_HEADER = "X-Pomerium-Jwt-Assertion-For"
CLAIM_HEADER_PREFIX = "X-Vallum-Claim-"
POMERIUM_CLAIM_HEADER_PREFIX = "X-Pomerium-Claim-"

_LIST_FORM = re.compile(r"^x-(?:pomerium|vallum)-claim-(.+)$", re.IGNORECASE)
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~-]+")


def issuer(route_host: str, issuer_format: str = "hostOnly") -> str:
    """The ``iss`` claim for a route host: ``host`` or ``https://host/`` (``uri``)."""
    if issuer_format == "uri":
        return f"https://{route_host}/"
    if issuer_format == "hostOnly":
        return route_host
    raise ValueError(f"jwt_issuer_format: unknown format {issuer_format!r} (hostOnly or uri)")


def filter_groups(groups: Iterable[str], allowed: Sequence[str]) -> list[str]:
    """Groups kept by ``jwt_groups_filter``: all of them when the filter is empty."""
    if not allowed:
        return list(groups)
    keep = frozenset(allowed)
    return [g for g in groups if g in keep]


def claim_string(value: Any) -> str:
    """A claim value as Pomerium renders it in headers and extra claims.

    Lists are joined with ``,`` (each item rendered the same way), booleans are ``true``/``false``,
    whole numbers have no decimal point, ``None`` is empty; objects become compact JSON (Pomerium
    would print Go's ``map[...]`` here, which nothing can parse).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(claim_string(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return str(value)


def stable_claims(
    who: identity.Identity, route_host: str, settings: config.Settings
) -> tuple[tuple[str, Any], ...]:
    """Every claim except the time-dependent ones (``jti``, ``iat``, ``exp``), in a fixed order.

    Hashable, so the minter can use it as (part of) a cache key: two requests with equal stable
    claims may share one signed token.
    """
    provider = who.claims
    email = who.email or claim_string(provider.get("email"))
    name = who.name or claim_string(provider.get("name"))
    groups = tuple(filter_groups(who.groups, settings.jwt_groups_filter))
    base: list[tuple[str, Any]] = [
        ("iss", issuer(route_host, settings.jwt_issuer_format)),
        ("aud", route_host),
        ("sub", who.user),
        ("user", who.user),
        ("email", email),
        ("groups", groups),
        ("sid", who.session_id),
        ("name", name),
    ]
    seen = set(BASE_CLAIMS)
    for _header, claim in settings.jwt_claims_headers:
        if claim in seen or claim not in provider:
            continue
        seen.add(claim)
        base.append((claim, claim_string(provider[claim])))
    return tuple(base)


def assertion_claims(
    who: identity.Identity,
    route_host: str,
    settings: config.Settings,
    now: float,
    jti: str | None = None,
    stable: tuple[tuple[str, Any], ...] | None = None,
) -> dict[str, Any]:
    """The full assertion payload for ``who`` on ``route_host`` issued at ``now`` (Unix time).

    ``stable`` may pass a precomputed :func:`stable_claims` result (the minter has it already).
    """
    issued = int(now)
    payload: dict[str, Any] = {
        "jti": jti or str(uuid.uuid4()),
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    for key, value in stable if stable is not None else stable_claims(who, route_host, settings):
        payload[key] = list(value) if key == "groups" else value
    return payload


def claim_header_names(header: str, settings: config.Settings) -> tuple[str, ...]:
    """The header name(s) one ``jwt_claims_headers`` entry is sent under.

    The list form (``x-pomerium-claim-email``/``x-vallum-claim-email``) gives
    ``X-Vallum-Claim-Email`` plus, with ``pomerium_compatibility``, ``X-Pomerium-Claim-Email``;
    any other name is used as written.
    """
    match = _LIST_FORM.match(header)
    if match is None:
        return (header,)
    suffix = "-".join(part[:1].upper() + part[1:] for part in _header_token(match[1]).split("-"))
    names = [CLAIM_HEADER_PREFIX + suffix]
    if settings.pomerium_compatibility:
        names.append(POMERIUM_CLAIM_HEADER_PREFIX + suffix)
    return tuple(names)


def claim_headers(
    payload: Mapping[str, Any], settings: config.Settings
) -> tuple[tuple[str, str], ...]:
    """The identity headers ``jwt_claims_headers`` asks for, with values from ``payload``.

    ``payload`` is the assertion's claims (:func:`assertion_claims`), so a header shows exactly
    what the signed token says. A claim the payload lacks gives an empty value, as in Pomerium.
    Header values never contain CR or LF (they would split the header).
    """
    out: list[tuple[str, str]] = []
    for header, claim in settings.jwt_claims_headers:
        value = _header_value(claim_string(payload.get(claim)))
        out.extend((name, value) for name in claim_header_names(header, settings))
    return tuple(out)


def identity_from_claims(payload: Mapping[str, Any]) -> identity.Identity:
    """An :class:`Identity` from a verified assertion payload (original user context)."""
    groups = payload.get("groups") or []
    return identity.Identity(
        user=str(payload.get("user") or payload.get("sub") or ""),
        email=str(payload.get("email") or ""),
        name=str(payload.get("name") or ""),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        claims=dict(payload),
        session_id=str(payload.get("sid") or ""),
        expires_at=float(payload.get("exp") or 0),
    )


def _header_token(text: str) -> str:
    return _NOT_TOKEN.sub("-", text).strip("-") or "Unnamed"


def _header_value(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")
