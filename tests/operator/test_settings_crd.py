"""Settings object + Secrets -> routes-file settings: every field reaches the key ``vallum
serve`` reads and loads through the real loader to the expected ``config.Settings``; every
failure (missing Secret or key, bad base64, not namespace/name, bad value, unsupported or
unknown field) is a problem naming the field, never an exception."""

from __future__ import annotations

import base64
import copy
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.certs import TestCA
from vallum.core import config, configfile, errors
from vallum.operator import settings_crd

CA = TestCA.create("Settings CRD Test CA")
OTHER_CA = TestCA.create("Settings CRD Other CA")
SERVER = CA.issue("auth.example.test")
CLIENT_CA = TestCA.create("Settings CRD Client CA")
CRL = CLIENT_CA.crl_pem([])
COOKIE = os.urandom(32)
SIGNING_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def secret(**data: str | bytes) -> dict[str, Any]:
    """A Secret as the API returns it: ``data`` values base64."""
    return {"kind": "Secret", "data": {k: b64(v) for k, v in data.items()}}


SECRETS: dict[tuple[str, str], dict[str, Any]] = {
    ("vallum", "bootstrap"): secret(
        cookie_secret=COOKIE, signing_key=SIGNING_KEY, shared_secret=os.urandom(32)
    ),
    ("vallum", "idp"): secret(client_id="vallum-client\n", client_secret=" s3cret "),
    ("vallum", "wildcard"): {
        "type": "kubernetes.io/tls",
        **secret(**{"tls.crt": SERVER.cert_pem, "tls.key": SERVER.key_pem}),
    },
    ("vallum", "corp-ca"): secret(**{"ca.crt": CA.cert_pem}),
    ("infra", "other-ca"): secret(**{"ca.crt": OTHER_CA.cert_pem}),
}

FULL: dict[str, Any] = {
    "apiVersion": "vallum.dev/v1alpha1",
    "kind": "Settings",
    "metadata": {"name": "global", "generation": 3},
    "spec": {
        "secrets": "vallum/bootstrap",
        "authenticate": {"url": "https://authenticate.example.test"},
        "identityProvider": {
            "provider": "google",
            "url": "https://accounts.google.com",
            "secret": "vallum/idp",
            "scopes": ["openid", "email"],
        },
        "certificates": ["vallum/wildcard"],
        "caSecrets": ["vallum/corp-ca", "infra/other-ca"],
        "cookie": {
            "name": "_sso",
            "domain": "example.test",
            "httpOnly": False,
            "secure": False,
            "expire": "8h0m0s",
            "sameSite": "strict",
        },
        "jwtClaimHeaders": {"X-Email": "email", "X-Groups": "groups"},
        "passIdentityHeaders": True,
        "timeouts": {"idle": "1m30s"},
        "downstreamMtls": {
            "ca": b64(CLIENT_CA.cert_pem),
            "crl": b64(CRL),
            "enforcement": "policy",
            "maxVerifyDepth": 3,
        },
        "headersWithUnderscoresAction": "drop_header",
        "idpAccessTokenAllowedAudiences": ["api://one", "api://two"],
        "xffNumTrustedHops": 2,
        "defaultUpstreamTimeout": "45s",
        "idpGroupsClaim": "roles",
        "idpAllowUnverifiedEmail": True,
        "jwtIssuerFormat": "uri",
        "jwtGroupsFilter": ["admins"],
        "pomeriumCompatibility": True,
    },
}


def load(values: Any) -> config.Settings:
    """``values`` as a routes file (JSON is YAML) through ``vallum serve``'s loader."""
    return configfile.loads(json.dumps({**values, "routes": []}), "settings.yaml")


def with_spec(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "vallum.dev/v1alpha1", "kind": "Settings", "spec": spec}


def test_every_field_loads_through_the_routes_file_loader() -> None:
    got = settings_crd.read(FULL, SECRETS)
    assert got.problems == ()
    assert got.warnings == ()
    loaded = load(got.values)
    spec = FULL["spec"]
    assert loaded.authenticate_service_url == spec["authenticate"]["url"]
    assert loaded.idp_provider == "google"
    assert loaded.idp_provider_url == spec["identityProvider"]["url"]
    assert loaded.idp_client_id == "vallum-client"  # whitespace around Secret values removed
    assert loaded.idp_client_secret == "s3cret"
    assert loaded.idp_scopes == ("openid", "email")
    assert base64.b64decode(loaded.cookie_secret or "") == COOKIE
    assert loaded.signing_key == (config.parse_pem(SIGNING_KEY, "any"),)
    assert [(c.cert_pem, c.key_pem) for c in loaded.certificates] == [
        (config.parse_pem(SERVER.cert_pem, "certificate"), config.parse_pem(SERVER.key_pem, "any"))
    ]
    assert loaded.certificate_authority_pem == config.parse_pem(
        CA.cert_pem + OTHER_CA.cert_pem, "certificate"
    )
    assert (loaded.cookie_name, loaded.cookie_domain) == ("_sso", "example.test")
    assert (loaded.cookie_http_only, loaded.cookie_secure) == (False, False)
    assert loaded.cookie_expire == 8 * 3600
    assert loaded.cookie_same_site == "strict"
    assert dict(loaded.jwt_claims_headers) == spec["jwtClaimHeaders"]
    assert loaded.pass_identity_headers is True
    assert loaded.timeout_idle == 90
    assert loaded.downstream_mtls == config.DownstreamMTLS(
        ca_pem=config.parse_pem(CLIENT_CA.cert_pem, "certificate"),
        crl_pem=config.parse_pem(CRL, "crl"),
        enforcement="policy",
        max_verify_depth=3,
    )
    assert loaded.headers_with_underscores_action == "drop_header"
    assert loaded.idp_access_token_allowed_audiences == ("api://one", "api://two")
    assert loaded.xff_num_trusted_hops == 2
    assert loaded.default_upstream_timeout == 45
    assert loaded.idp_groups_claim == "roles"
    assert loaded.idp_allow_unverified_email is True
    assert loaded.jwt_issuer_format == "uri"
    assert loaded.jwt_groups_filter == ("admins",)
    assert loaded.pomerium_compatibility is True


def test_every_loaded_setting_differs_from_its_default() -> None:
    """The full example sets each setting to something other than the default, so the test
    above cannot pass by a field being left out."""
    loaded, default = load(settings_crd.read(FULL, SECRETS).values), config.Settings()
    same = [
        f for f in config.Settings.__dataclass_fields__ if getattr(loaded, f) == getattr(default, f)
    ]
    # Listeners and logging come from the controller's command line, not from Settings.
    assert sorted(same) == sorted(
        [
            "address",
            "http_redirect_addr",
            "insecure_server",
            "metrics_address",
            "dev_mode",
            "log_level",
            "routes",
            "watched_files",
        ]
    )


def test_values_are_plain_routes_file_keys_and_deterministic() -> None:
    first = settings_crd.read(FULL, SECRETS)
    again = settings_crd.read(copy.deepcopy(FULL), dict(reversed(list(SECRETS.items()))))
    assert first == again
    assert list(first.values) == sorted(first.values)
    assert set(first.values) <= set(configfile.SETTINGS_KEYS)
    json.dumps(first.values)  # plain data only


def test_secrets_used_names_every_secret_referenced() -> None:
    got = settings_crd.read(FULL, SECRETS)
    assert got.secrets_used == frozenset(SECRETS)
    missing = settings_crd.read(with_spec(secrets="vallum/nope", certificates=["x/y"]), {})
    assert missing.secrets_used == {("vallum", "nope"), ("x", "y")}


def test_no_settings_object_means_defaults_and_no_problem() -> None:
    got = settings_crd.read(None, SECRETS)
    assert got == settings_crd.SettingsResult(values={}, problems=(), secrets_used=frozenset())


@pytest.mark.parametrize("spec", [None, {}], ids=["no-spec", "empty-spec"])
def test_an_empty_settings_object_loads_the_defaults(spec: Any) -> None:
    got = settings_crd.read({"kind": "Settings", "spec": spec}, {})
    assert (got.values, got.problems) == ({}, ())
    assert configfile.loads('{"routes": []}', "x.yaml") == load(got.values)


def test_pomerium_bootstrap_secret_shared_secret_is_ignored() -> None:
    got = settings_crd.read(with_spec(secrets="vallum/bootstrap"), SECRETS)
    assert got.problems == ()
    assert set(got.values) == {"cookie_secret", "signing_key"}


def test_a_missing_certificate_secret_is_a_warning_and_is_skipped() -> None:
    spec = {"certificates": ["vallum/not-yet", "vallum/wildcard"]}
    got = settings_crd.read(with_spec(**spec), SECRETS)
    assert got.problems == ()
    assert got.warnings == (
        "spec.certificates[0]: Secret vallum/not-yet not found; skipped until it exists",
    )
    assert len(load(got.values).certificates) == 1


def test_caSecrets_bundle_keeps_the_order_of_the_list() -> None:
    spec = {"caSecrets": ["infra/other-ca", "vallum/corp-ca"]}
    got = settings_crd.read(with_spec(**spec), SECRETS)
    assert load(got.values).certificate_authority_pem == config.parse_pem(
        OTHER_CA.cert_pem + CA.cert_pem, "certificate"
    )


def test_a_cookie_secret_in_base64_text_also_works() -> None:
    """``stringData.cookie_secret: $(head -c32 /dev/urandom | base64)``, the routes file's form,
    is 44 bytes of text: accepted as key material (at least 32 bytes)."""
    text = b64(os.urandom(32))
    secrets = {("a", "b"): secret(cookie_secret=text, signing_key=SIGNING_KEY)}
    got = settings_crd.read(with_spec(secrets="a/b"), secrets)
    assert got.problems == ()
    assert base64.b64decode(load(got.values).cookie_secret or "") == text.encode()


# (id, spec, secrets, the problems)
BAD: list[tuple[str, dict[str, Any], dict[tuple[str, str], Any], list[str]]] = [
    (
        "secrets-missing-secret",
        {"secrets": "vallum/nope"},
        SECRETS,
        ["spec.secrets: Secret vallum/nope not found"],
    ),
    (
        "secrets-missing-keys",
        {"secrets": "vallum/empty"},
        {("vallum", "empty"): {"data": {}}},
        [
            "spec.secrets: Secret vallum/empty has no key cookie_secret",
            "spec.secrets: Secret vallum/empty has no key signing_key",
        ],
    ),
    (
        "secrets-without-data",
        {"secrets": "vallum/empty"},
        {("vallum", "empty"): {"kind": "Secret"}},
        [
            "spec.secrets: Secret vallum/empty has no key cookie_secret",
            "spec.secrets: Secret vallum/empty has no key signing_key",
        ],
    ),
    (
        "secrets-bad-base64",
        {"secrets": "vallum/b"},
        {("vallum", "b"): {"data": {"cookie_secret": "not base64!", "signing_key": 5}}},
        [
            "spec.secrets: Secret vallum/b key cookie_secret: not valid base64",
            "spec.secrets: Secret vallum/b key signing_key: not valid base64",
        ],
    ),
    (
        "cookie-secret-too-short",
        {"secrets": "vallum/b"},
        {("vallum", "b"): secret(cookie_secret=b"x" * 16, signing_key=SIGNING_KEY)},
        [
            "spec.secrets: Secret vallum/b key cookie_secret: must hold at least 32 random "
            "bytes (head -c32 /dev/urandom), got 16"
        ],
    ),
    (
        "signing-key-not-text",
        {"secrets": "vallum/b"},
        {("vallum", "b"): secret(cookie_secret=COOKIE, signing_key=b"\xff\xfe")},
        ["spec.secrets: Secret vallum/b key signing_key: not text (UTF-8)"],
    ),
    (
        "signing-key-not-a-key",
        {"secrets": "vallum/b"},
        {("vallum", "b"): secret(cookie_secret=COOKIE, signing_key="hello")},
        ["spec.secrets: Secret vallum/b key signing_key: "],
    ),
    (
        "idp-secret-missing-key",
        {
            "identityProvider": {
                "provider": "oidc",
                "url": "https://id.test",
                "secret": "vallum/idp2",
            }
        },
        {("vallum", "idp2"): secret(client_id="x")},
        ["spec.identityProvider.secret: Secret vallum/idp2 has no key client_secret"],
    ),
    (
        "idp-secret-missing",
        {
            "identityProvider": {
                "provider": "oidc",
                "url": "https://id.test",
                "secret": "vallum/idp",
            }
        },
        {},
        ["spec.identityProvider.secret: Secret vallum/idp not found"],
    ),
    (
        "idp-without-secret",
        {"identityProvider": {"provider": "oidc", "url": "https://id.test"}},
        SECRETS,
        ["spec.identityProvider.secret: required (a Secret with client_id and client_secret)"],
    ),
    (
        "idp-bad-url",
        {"identityProvider": {"provider": "oidc", "url": "ftp://id.test", "secret": "vallum/idp"}},
        SECRETS,
        ["spec.identityProvider.url: expected an http(s):// URL, got 'ftp://id.test'"],
    ),
    (
        "idp-bad-scopes",
        {"identityProvider": {"provider": "oidc", "secret": "vallum/idp", "scopes": {"a": 1}}},
        SECRETS,
        ["spec.identityProvider.scopes: expected a list of strings, got a mapping"],
    ),
    (
        "authenticate-bad-url",
        {"authenticate": {"url": "authenticate.example.test"}},
        SECRETS,
        ["spec.authenticate.url: expected an http(s):// URL, got 'authenticate.example.test'"],
    ),
    (
        "not-namespace-name",
        {"secrets": "bootstrap", "caSecrets": ["Vallum/ca", "ns/", 5], "certificates": ["a/b/c"]},
        SECRETS,
        [
            "spec.secrets: expected namespace/name of a Secret, got 'bootstrap'",
            "spec.certificates[0]: expected namespace/name of a Secret, got 'a/b/c'",
            "spec.caSecrets[0]: expected namespace/name of a Secret, got 'Vallum/ca'",
            "spec.caSecrets[1]: expected namespace/name of a Secret, got 'ns/'",
            "spec.caSecrets[2]: expected namespace/name of a Secret, got 5",
        ],
    ),
    (
        "tls-secret-missing-key",
        {"certificates": ["vallum/half"]},
        {("vallum", "half"): secret(**{"tls.crt": SERVER.cert_pem})},
        ["spec.certificates[0]: Secret vallum/half has no key tls.key"],
    ),
    (
        "tls-secret-bad-pem",
        {"certificates": ["vallum/wildcard", "vallum/bad"]},
        {
            **SECRETS,
            ("vallum", "bad"): secret(**{"tls.crt": "garbage", "tls.key": SERVER.key_pem}),
        },
        ["spec.certificates[1]: Secret vallum/bad key tls.crt: "],
    ),
    (
        "ca-secret-missing",
        {"caSecrets": ["vallum/corp-ca", "vallum/gone"]},
        SECRETS,
        ["spec.caSecrets[1]: Secret vallum/gone not found"],
    ),
    (
        "ca-secret-not-a-certificate",
        {"caSecrets": ["vallum/bad"]},
        {("vallum", "bad"): secret(**{"ca.crt": SERVER.key_pem})},
        ["spec.caSecrets[0]: Secret vallum/bad key ca.crt: "],
    ),
    (
        "cookie-bad-values",
        {"cookie": {"expire": "fast", "sameSite": "sideways", "httpOnly": "maybe"}},
        SECRETS,
        [
            "spec.cookie.httpOnly: expected true or false, got 'maybe'",
            'spec.cookie.expire: expected a duration like "30s" or "1m30s", got \'fast\'',
            "spec.cookie.sameSite: expected one of lax, strict, none, Lax, Strict, None, "
            "got 'sideways'",
        ],
    ),
    (
        "top-level-bad-values",
        {
            "xffNumTrustedHops": -1,
            "jwtIssuerFormat": "url",
            "headersWithUnderscoresAction": "keep",
            "passIdentityHeaders": "yes please",
            "jwtClaimHeaders": ["email", {"a": 1}],
            "defaultUpstreamTimeout": "-5s",
        },
        SECRETS,
        [
            "spec.xffNumTrustedHops: expected a whole number >= 0, got -1",
            'spec.defaultUpstreamTimeout: expected a duration like "30s" or "1m30s", got \'-5s\'',
            "spec.headersWithUnderscoresAction: expected one of allow, drop_header, "
            "reject_request, got 'keep'",
            "spec.jwtClaimHeaders[1]: expected a string, got a mapping",
            "spec.jwtIssuerFormat: expected one of hostOnly, uri, got 'url'",
            "spec.passIdentityHeaders: expected true or false, got 'yes please'",
        ],
    ),
    (
        "timeouts-bad-idle",
        {"timeouts": {"idle": "soon"}},
        SECRETS,
        ['spec.timeouts.idle: expected a duration like "30s" or "1m30s", got \'soon\''],
    ),
    (
        "downstream-mtls-bad",
        {"downstreamMtls": {"ca": "bm90IFBFTQ==", "enforcement": "strict", "maxVerifyDepth": -2}},
        SECRETS,
        [
            "spec.downstreamMtls.ca: ",
            "spec.downstreamMtls.enforcement: expected one of policy_with_default_deny, "
            "policy, reject_connection, got 'strict'",
            "spec.downstreamMtls.maxVerifyDepth: expected a whole number >= 0, got -2",
            # the loader's own follow-up: the ca it could not read is missing
            "spec.downstreamMtls: ca or ca_file is required for downstream mTLS",
        ],
    ),
    (
        "downstream-mtls-without-ca",
        {"downstreamMtls": {"enforcement": "policy"}},
        SECRETS,
        ["spec.downstreamMtls: ca or ca_file is required for downstream mTLS"],
    ),
    (
        "pomerium-fields-vallum-does-not-support",
        {
            "setResponseHeaders": {"X-Frame-Options": "DENY"},
            "timeouts": {"read": "30s", "write": "1m", "idle": "5m"},
            "identityProvider": {
                "provider": "oidc",
                "secret": "vallum/idp",
                "requestParams": {"hd": "example.test"},
            },
            "downstreamMtls": {"ca": b64(CLIENT_CA.cert_pem), "matchSubjectAltNames": {"dns": "x"}},
        },
        SECRETS,
        [
            "spec.setResponseHeaders: a Pomerium setting Vallum does not support; set response "
            "headers per route (annotation ingress.vallum.dev/set_response_headers)",
            "spec.timeouts.read: a Pomerium setting Vallum does not support",
            "spec.timeouts.write: a Pomerium setting Vallum does not support; a route's timeout "
            "limits each upstream exchange (see defaultUpstreamTimeout)",
            "spec.identityProvider.requestParams: a Pomerium setting Vallum does not support",
            "spec.downstreamMtls.matchSubjectAltNames: a Pomerium setting Vallum does not "
            "support; put the constraint in a policy (client_certificate)",
        ],
    ),
    (
        "unknown-fields",
        {
            "storage": {"file": {"path": "/x"}},
            "cookies": {},
            "cookie": {"expires": "1h"},
            "identityProvider": {"provider": "oidc", "secret": "vallum/idp", "scope": ["x"]},
        },
        SECRETS,
        [
            "spec.storage: unknown field",
            "spec.cookies: unknown field (did you mean 'cookie'?)",
            "spec.identityProvider.scope: unknown field (did you mean 'scopes'?)",
            "spec.cookie.expires: unknown field (did you mean 'expire'?)",
        ],
    ),
    (
        "wrong-shapes",
        {
            "authenticate": "https://a.test",
            "cookie": ["x"],
            "certificates": "vallum/wildcard",
            "caSecrets": {"a": "b"},
        },
        SECRETS,
        [
            "spec.authenticate: expected a mapping, got 'https://a.test'",
            "spec.certificates: expected a list, got 'vallum/wildcard'",
            "spec.caSecrets: expected a list, got a mapping",
            "spec.cookie: expected a mapping, got a list",
        ],
    ),
]


@pytest.mark.parametrize(
    ("spec", "secrets", "problems"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_problems_name_the_field(
    spec: dict[str, Any], secrets: dict[tuple[str, str], Any], problems: list[str]
) -> None:
    got = settings_crd.read(with_spec(**spec), secrets)
    assert len(got.problems) == len(problems), got.problems
    for text, expected in zip(sorted(got.problems), sorted(problems), strict=True):
        if expected.endswith(": "):  # the loader's own wording follows
            assert text.startswith(expected), got.problems
        else:
            assert text == expected, got.problems


def test_a_spec_that_is_not_a_mapping_is_a_problem() -> None:
    got = settings_crd.read({"kind": "Settings", "spec": ["x"]}, {})
    assert got.problems == ("spec: expected a mapping, got a list",)
    assert got.values == {}


def test_values_with_problems_never_hold_the_bad_value() -> None:
    spec = {"xffNumTrustedHops": "two", "passIdentityHeaders": True}
    got = settings_crd.read(with_spec(**spec), {})
    assert got.values == {"pass_identity_headers": True}
    assert got.problems == ("spec.xffNumTrustedHops: expected a whole number >= 0, got 'two'",)


def test_problems_are_bounded() -> None:
    refs = [f"ns/s{i}" for i in range(150)]
    got = settings_crd.read(with_spec(caSecrets=refs), {})
    assert len(got.problems) == 101
    assert got.problems[-1] == "Settings: … and 50 more problems"


def test_loads_rejects_what_read_rejects() -> None:
    """The problems are the loader's: the same bad value in a routes file fails to load."""
    got = settings_crd.read(with_spec(cookie={"expire": "fast"}), {})
    assert got.problems
    with pytest.raises(errors.ConfigError, match="cookie_expire: expected a duration"):
        load({"cookie_expire": "fast"})
