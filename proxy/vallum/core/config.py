"""Configuration values: ``Settings``, ``Route`` and the immutable ``RouteTable``.

These frozen dataclasses are the contract between what *produces* configuration (the YAML
loader in :mod:`vallum.core.configfile`, later the Kubernetes operator) and what *serves* from it
(the proxy). Names follow Pomerium's settings and route options wherever Pomerium
has one, so an existing Pomerium config file needs no edits for the features Vallum supports.

Values here are already validated and normalised: durations are seconds (``float``), PEM material
referenced by ``*_file`` options has been read (and the file recorded in ``Settings.watched_files``
so that a change reloads), hosts are lower-case without a trailing dot.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NewType

from cryptography import x509
from cryptography.hazmat.primitives import serialization

Host = NewType("Host", str)
"""A lower-case host name without port or trailing dot; may start with ``*.`` (one label)."""

PolicyData = Any
"""A policy as written by the user (YAML/JSON data); compiled by :mod:`vallum.core.policy`."""

PathMatch = Literal["prefix", "exact", "regex"]

ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
"""The only paths a route with ``acme_http01_solver`` serves over plain HTTP (RFC 8555 8.3)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """One ``to`` URL of a route, with its load-balancing weight."""

    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str = ""
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate and key in PEM (inline, or read from ``cert_file``/``key_file``)."""

    cert_pem: str
    key_pem: str
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class DownstreamMTLS:
    """Client certificates presented to Vallum (Pomerium's ``downstream_mtls``)."""

    ca_pem: str | None = None
    crl_pem: str | None = None
    enforcement: Literal["policy_with_default_deny", "policy", "reject_connection"] = (
        "policy_with_default_deny"
    )
    max_verify_depth: int = 1


@dataclass(frozen=True, slots=True)
class Route:
    """One route: which requests it takes (``from`` + path rule) and where they go (``to``)."""

    from_url: str
    host: Host
    to: tuple[Upstream, ...]
    # Exactly one of these selects the path; none means "every path" (prefix "/").
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    name: str = ""
    # Rewrites and headers.
    prefix_rewrite: str | None = None
    regex_rewrite_pattern: str | None = None
    regex_rewrite_substitution: str | None = None
    host_rewrite: str | None = None
    preserve_host_header: bool = False
    set_request_headers: tuple[tuple[str, str], ...] = ()
    remove_request_headers: tuple[str, ...] = ()
    set_response_headers: tuple[tuple[str, str], ...] = ()
    # Timeouts in seconds; 0 disables.
    timeout: float = 30.0
    idle_timeout: float = 300.0
    allow_websockets: bool = False
    # Upstream TLS.
    tls_skip_verify: bool = False
    tls_server_name: str | None = None
    tls_custom_ca_pem: str | None = None
    tls_client_cert_pem: str | None = None
    tls_client_key_pem: str | None = None
    # Identity and access.
    pass_identity_headers: bool | None = None
    allow_public_unauthenticated_access: bool = False
    allow_any_authenticated_user: bool = False
    allowed_users: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    allowed_idp_claims: tuple[tuple[str, tuple[str, ...]], ...] = ()
    policy: PolicyData = None
    # Where the route came from, for messages ("routes.yaml:12", "Ingress default/app").
    source: str = ""
    unavailable: str | None = None
    """Why this route refuses every request (503, the reason on the error page), or None. Set
    by the operator on the routes of a broken Ingress (missing Secret, unknown Service, no
    ready endpoint), so they still take their host and path and fail closed."""
    acme_http01_solver: bool = False
    """Also served on the plain-HTTP listener (``http_redirect_addr``) instead of redirected, for
    paths under :data:`ACME_CHALLENGE_PREFIX` only. Vallum's own flag, not a route option of
    the file: the operator sets it on the routes of cert-manager's HTTP-01 solver Ingresses, so
    that an ACME server's ``http://`` request for a token reaches the solver."""

    @property
    def path_match(self) -> PathMatch:
        if self.path is not None:
            return "exact"
        if self.regex is not None:
            return "regex"
        return "prefix"

    @property
    def path_value(self) -> str:
        """The path rule's value: the exact path, the regex, or the prefix (``/`` by default)."""
        if self.path is not None:
            return self.path
        if self.regex is not None:
            return self.regex
        return self.prefix or "/"

    @property
    def upstream_tls_profile(self) -> tuple[bool, str | None, str | None, str | None, str | None]:
        """What makes two routes' upstream TLS contexts interchangeable (pool key part)."""
        return (
            self.tls_skip_verify,
            self.tls_server_name,
            self.tls_custom_ca_pem,
            self.tls_client_cert_pem,
            self.tls_client_key_pem,
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Global settings (Pomerium's names) plus the routes. Immutable: reload builds a new one."""

    address: str = ":443"
    http_redirect_addr: str | None = None
    insecure_server: bool = False
    certificates: tuple[Certificate, ...] = ()
    metrics_address: str | None = None
    xff_num_trusted_hops: int = 0
    timeout_idle: float = 300.0
    headers_with_underscores_action: Literal["allow", "drop_header", "reject_request"] = (
        "reject_request"
    )
    """Client headers whose name has an ``_`` (Envoy's and Pomerium's option of this name).
    Whatever it says, an underscore spelling of a header Vallum sets is always removed."""
    # Identity provider and sessions.
    authenticate_service_url: str | None = None
    idp_provider_url: str | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = None
    idp_scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    idp_groups_claim: str = "groups"
    idp_access_token_allowed_audiences: tuple[str, ...] = ()
    """Audiences (besides ``idp_client_id``) accepted on bearer JWT access tokens."""
    idp_allow_unverified_email: bool = False
    """Use an email the provider marks ``email_verified: false`` (by default it is ignored)."""
    cookie_secret: str | None = None
    cookie_name: str = "_vallum"
    cookie_domain: str | None = None
    cookie_expire: float = 14 * 3600.0
    cookie_secure: bool = True
    cookie_http_only: bool = True
    cookie_same_site: Literal["lax", "strict", "none"] = "lax"
    # The identity assertion.
    signing_key: tuple[str, ...] = ()
    jwt_claims_headers: tuple[tuple[str, str], ...] = ()
    jwt_issuer_format: Literal["hostOnly", "uri"] = "hostOnly"
    jwt_groups_filter: tuple[str, ...] = ()
    pass_identity_headers: bool = False
    pomerium_compatibility: bool = False
    downstream_mtls: DownstreamMTLS | None = None
    certificate_authority_pem: str | None = None
    dev_mode: bool = False
    # Added with the YAML loader: the route ``timeout`` used when a route sets none (Pomerium's
    # ``default_upstream_timeout``), the IdP kind as written, and the log level.
    default_upstream_timeout: float = 30.0
    idp_provider: str = "oidc"
    log_level: str = "info"
    routes: tuple[Route, ...] = ()
    # Every file this configuration was read from; a change to any of them triggers a reload.
    watched_files: tuple[str, ...] = ()

    def checksum(self) -> str:
        """A stable digest of the whole configuration: equal inputs, equal checksum."""
        data = json.dumps(_plain(self), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(data.encode()).hexdigest()[:16]


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(value: object) -> object:
    if value is None or isinstance(value, (str, int, float)):
        return value
    names = _FIELD_NAMES.get(type(value))
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class RouteTable:
    """The immutable table the proxy serves from: settings, routes and a host index.

    Build it with :func:`vallum.core.routing.build_table`; never mutate it, replace it.
    """

    settings: Settings
    checksum: str
    index: Any = field(repr=False, compare=False, default=None)
    """The routing index (built by :mod:`vallum.core.routing`); opaque to everyone else."""


# ------------------------------------------------------------------------------------------
# Value forms shared by every producer of configuration (the YAML loader, the operator's
# annotations). Each raises ``ValueError`` with a message meant for the user; the caller adds
# the place (file, line, key).

_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: object) -> float:
    """Seconds from a Go duration string (``"30s"``, ``"1m30s"``, ``"1.5h"``, ``"0"``) or a
    number of seconds. Negative durations are refused."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "30s", got {value!r}')
    if isinstance(value, (int, float)):
        if value < 0 or value != value:
            raise ValueError(f"expected a duration of zero or more, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f'expected a duration like "30s", got {value!r}')
    text = value.strip()
    if text in ("0", "+0"):
        return 0.0
    body = text[1:] if text.startswith("+") else text
    pos, total = 0, 0.0
    for found in _GO_DURATION.finditer(body):
        if found.start() != pos:
            break
        total += float(found.group(1)) * _GO_UNITS[found.group(2)]
        pos = found.end()
    if not body or pos != len(body):
        raise ValueError(f'expected a duration like "30s" or "1m30s", got {value!r}')
    return total


def parse_upstream(text: str) -> Upstream:
    """One ``to`` entry: ``http(s)://host[:port][/path]``, optionally ``,weight`` (Pomerium's
    weighted form, weight a positive integer)."""
    url, weight = text.strip(), 1
    if "," in url:
        url, _, raw_weight = url.partition(",")
        if not raw_weight.strip().isdigit() or int(raw_weight) < 1:
            raise ValueError(f"weight must be a positive integer, got {raw_weight!r} in {text!r}")
        weight = int(raw_weight)
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"upstream must be an http:// or https:// URL, got {url!r}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError as exc:
        raise ValueError(f"invalid upstream URL {url!r}: {exc}") from None
    if not host:
        raise ValueError(f"upstream URL has no host: {url!r}")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise ValueError(f"upstream URL may not carry a query, fragment or user: {url!r}")
    default_port = 443 if scheme == "https" else 80
    return Upstream(
        url=url,
        scheme="https" if scheme == "https" else "http",
        host=host,
        port=port or default_port,
        path=parsed.path.rstrip("/") if parsed.path != "/" else "",
        weight=weight,
    )


def parse_pem(value: str, kind: Literal["certificate", "private key", "crl", "any"]) -> str:
    """PEM text from raw PEM or base64-encoded PEM (Pomerium's inline form), checked to hold
    at least one ``kind`` block that ``cryptography`` can load."""
    text = value.strip()
    if "-----BEGIN" not in text:
        try:
            text = base64.b64decode("".join(text.split()), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ValueError(f"expected PEM or base64-encoded PEM ({kind})") from None
        if "-----BEGIN" not in text:
            raise ValueError(f"base64 value does not decode to PEM ({kind})")
    data = text.encode()
    try:
        if kind == "certificate":
            x509.load_pem_x509_certificates(data)
        elif kind == "private key":
            serialization.load_pem_private_key(data, password=None)
        elif kind == "crl":
            x509.load_pem_x509_crl(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a valid PEM {kind}: {exc}") from None
    return text.strip() + "\n"


def claim_header_name(claim: str) -> str:
    """Pomerium's header for a claim listed without a name: ``given_name`` ->
    ``X-Pomerium-Claim-Given-Name``."""
    parts = claim.replace("_", "-").split("-")
    return "X-Pomerium-Claim-" + "-".join(p[:1].upper() + p[1:].lower() for p in parts)
