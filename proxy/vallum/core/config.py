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

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NewType

Host = NewType("Host", str)
"""A lower-case host name without port or trailing dot; may start with ``*.`` (one label)."""

PolicyData = Any
"""A policy as written by the user (YAML/JSON data); compiled by :mod:`vallum.core.policy`."""

PathMatch = Literal["prefix", "exact", "regex"]


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
    # Identity provider and sessions.
    authenticate_service_url: str | None = None
    idp_provider_url: str | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = None
    idp_scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    idp_groups_claim: str = "groups"
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
    routes: tuple[Route, ...] = ()
    # Every file this configuration was read from; a change to any of them triggers a reload.
    watched_files: tuple[str, ...] = ()

    def checksum(self) -> str:
        """A stable digest of the whole configuration: equal inputs, equal checksum."""
        data = json.dumps(_plain(self), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(data.encode()).hexdigest()[:16]


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
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
