"""The YAML loader: Pomerium's keys and value forms, problems that name key and line, files."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.certs import TestCA
from vallum.core import config, configfile, errors, routing

REPO = Path(__file__).resolve().parents[2]


def load(text: str, source: str = "routes.yaml", base: Path | None = None) -> config.Settings:
    return configfile.loads(textwrap.dedent(text), source, base_dir=str(base or REPO))


def problems(text: str, base: Path | None = None) -> list[str]:
    with pytest.raises(errors.ConfigError) as info:
        load(text, base=base)
    return list(info.value.problems)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------- the shipped examples


@pytest.mark.parametrize("name", ["standalone.yaml", "pomerium-routes.yaml"])
def test_examples_load_and_build(name: str) -> None:
    path = REPO / "examples" / name
    s = configfile.load(str(path))
    assert s.routes
    assert s.watched_files[0] == str(path)
    routing.build_table(s)


def test_standalone_example_runs_without_root() -> None:
    s = configfile.load(str(REPO / "examples" / "standalone.yaml"))
    assert s.address == "127.0.0.1:8443"
    assert s.http_redirect_addr == "127.0.0.1:8080"
    assert s.metrics_address == "127.0.0.1:9090"
    assert s.certificates == ()
    (route,) = s.routes
    assert route.allow_public_unauthenticated_access
    assert route.to[0].url == "http://127.0.0.1:8000"


def test_pomerium_example_values() -> None:
    s = configfile.load(str(REPO / "examples" / "pomerium-routes.yaml"))
    assert s.cookie_expire == 8 * 3600
    assert s.jwt_claims_headers == (
        ("X-Pomerium-Claim-Email", "email"),
        ("X-Pomerium-Claim-Groups", "groups"),
    )
    verify, api, regex, ws, legacy = s.routes
    assert verify.timeout == 45.0  # default_upstream_timeout
    assert verify.policy == [{"allow": {"or": [{"domain": {"is": "example.com"}}]}}]
    assert [(u.port, u.weight) for u in api.to] == [(8001, 10), (8002, 20)]
    assert api.timeout == 90.0 and api.idle_timeout == 300.0
    assert api.set_request_headers == (("X-Custom", "hello"),)
    assert api.remove_request_headers == ("X-Debug",)
    assert api.allowed_users == ("alice@example.com",)
    assert regex.regex == "^/v[0-9]+/.*$" and regex.regex_rewrite_substitution == "/\\1"
    assert ws.tls_server_name == "internal.example.com" and ws.preserve_host_header
    assert legacy.path == "/health"


# ---------------------------------------------------------------- messages


def test_problem_names_file_line_and_key() -> None:
    got = problems(
        """\
        address: 127.0.0.1:8443
        routes:
          - from: https://a.example.com
            to: http://127.0.0.1:1
          - from: https://b.example.com
            to: http://127.0.0.1:2
          - from: https://c.example.com
            to: http://127.0.0.1:3
            timeout: fast
        """
    )
    assert got == [
        'routes.yaml:9: routes[2].timeout: expected a duration like "30s" or "1m30s", got \'fast\''
    ]


def test_every_problem_is_collected_in_line_order() -> None:
    got = problems(
        """\
        adress: 127.0.0.1:8443
        cookie_expire: soon
        routes:
          - from: https://a.example.com
            to: [http://127.0.0.1:1, "ftp://x"]
            timout: 5s
            regex: "(unclosed"
          - to: http://127.0.0.1:2
          - from: https://b.example.com/with/path
            to: http://127.0.0.1:3
        insecure_server: maybe
        """
    )
    assert got[0] == "routes.yaml:1: adress: unknown key (did you mean 'address'?)"
    assert got[1].startswith("routes.yaml:2: cookie_expire: expected a duration")
    assert got[2].startswith("routes.yaml:5: routes[0].to[1]: upstream must be an http")
    assert got[3] == "routes.yaml:6: routes[0].timout: unknown key (did you mean 'timeout'?)"
    assert got[4].startswith("routes.yaml:7: routes[0].regex: invalid regular expression")
    assert got[5].startswith("routes.yaml:8: routes[1]: from is required")
    assert got[6].startswith("routes.yaml:9: routes[2].from: the URL may hold only a host")
    assert got[7] == "routes.yaml:11: insecure_server: expected true or false, got 'maybe'"
    assert len(got) == 8


def test_invalid_yaml_names_its_line() -> None:
    got = problems("address: x\nroutes:\n  - from: [\n")
    assert len(got) == 1 and got[0].startswith("routes.yaml:4: not valid YAML")


def test_duplicate_keys_are_errors() -> None:
    got = problems("address: a:1\ncookie_name: x\naddress: b:2\n")
    assert got == ["routes.yaml:3: address: duplicate key (first on line 1)"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_file_is_an_error(text: str) -> None:
    assert "empty" in problems(text)[0]


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n") == ["routes.yaml:1: expected a mapping, got a list"]


def test_merge_keys_work() -> None:
    s = load(
        """\
        routes:
          - &base
            from: https://a.example.com
            to: http://127.0.0.1:1
            timeout: 5s
          - <<: *base
            from: https://b.example.com
        """
    )
    assert [(r.host, r.timeout) for r in s.routes] == [
        ("a.example.com", 5.0),
        ("b.example.com", 5.0),
    ]


def test_recursive_alias_is_refused() -> None:
    got = problems("routes: &r\n  - from: *r\n")
    assert got[0] == "routes.yaml:1: routes[0].from: an alias refers to the value that contains it"


def test_nested_aliases_stay_small() -> None:
    text = "x: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    text += "routes:\n  - {from: https://a, to: http://127.0.0.1:1, policy: *i}\n"
    got = problems(text)  # 9**9 values if expanded; refused instead of eating the machine
    # The line is where the aliased value is written (the anchor).
    assert "routes.yaml:9: routes[0].policy: more than 100000 values" in got[-1]


# ---------------------------------------------------------------- routes


def test_from_forms() -> None:
    s = load(
        """\
        routes:
          - {from: "https://App.Example.COM.", to: "http://127.0.0.1:1"}
          - {from: "https://*.example.com", to: "http://127.0.0.1:1"}
          - {from: "https://x.example.com:8443/", to: "http://127.0.0.1:1"}
        """
    )
    assert [r.host for r in s.routes] == ["app.example.com", "*.example.com", "x.example.com"]
    got = problems(
        """\
        routes:
          - {from: "tcp+https://db.example.com:5432", to: "tcp://db:5432"}
          - {from: "https://a.*.example.com", to: "http://127.0.0.1:1"}
          - {from: "app.example.com", to: "http://127.0.0.1:1"}
        """
    )
    assert "TCP/UDP routes are not supported" in got[0]
    assert (
        got[2]
        == "routes.yaml:3: routes[1].from: a wildcard must be the whole first label (*.example.com)"
    )
    assert got[3].startswith("routes.yaml:4: routes[2].from: expected an https:// URL")


def test_to_forms_and_weights() -> None:
    s = load(
        """\
        routes:
          - {from: "https://a", to: "http://127.0.0.1:1"}
          - {from: "https://b", to: ["http://127.0.0.1:1", "https://127.0.0.1:2"]}
          - {from: "https://c", to: ["http://127.0.0.1:1,3", "http://127.0.0.1:2,1"]}
        """
    )
    assert [[(u.scheme, u.port, u.weight) for u in r.to] for r in s.routes] == [
        [("http", 1, 1)],
        [("http", 1, 1), ("https", 2, 1)],
        [("http", 1, 3), ("http", 2, 1)],
    ]
    got = problems(
        """\
        routes:
          - {from: "https://a", to: ["http://127.0.0.1:1,3", "http://127.0.0.1:2"]}
          - {from: "https://b", to: []}
          - {from: "https://c", to: "http://127.0.0.1:1,0"}
          - {from: "https://d"}
        """
    )
    assert "give every upstream a weight, or none" in got[0]
    assert got[1] == "routes.yaml:3: routes[1].to: needs at least one upstream URL"
    assert "weight must be a positive integer" in got[2]
    assert "to is required" in got[3]


def test_path_rules() -> None:
    got = problems(
        """\
        routes:
          - {from: "https://a", to: "http://127.0.0.1:1", prefix: /a, path: /b}
          - {from: "https://a", to: "http://127.0.0.1:1", prefix: "a"}
          - {from: "https://a", to: "http://127.0.0.1:1", path: "/%2e%2e/x"}
          - {from: "https://a", to: "http://127.0.0.1:1", regex_rewrite_pattern: "x"}
          - {from: "https://a", to: "http://127.0.0.1:1", prefix_rewrite: /,
             regex_rewrite_pattern: x, regex_rewrite_substitution: y}
        """
    )
    assert "set only one of prefix, path, regex" in got[0]
    assert "routes[1].prefix: expected an absolute path" in got[1]
    assert "routes[2].path: expected an absolute path" in got[2]
    assert "routes[3].regex_rewrite_pattern: needs regex_rewrite_substitution" in got[3]
    assert "routes[4].prefix_rewrite: set prefix_rewrite or regex_rewrite_pattern" in got[4]


def test_route_options_and_defaults() -> None:
    s = load(
        """\
        default_upstream_timeout: 10s
        routes:
          - from: https://a
            to: http://127.0.0.1:1
          - from: https://b
            to: http://127.0.0.1:1
            timeout: 0
            idle_timeout: 1m
            allow_websockets: true
            tls_skip_verify: "true"
            tls_server_name: old.example.com
            pass_identity_headers: false
            allowed_domains: example.com, example.org
            allowed_idp_claims:
              groups: [admins, ops]
              hd: example.com
            set_response_headers: {X-Num: 5}
        """
    )
    a, b = s.routes
    assert a.timeout == 10.0 and a.pass_identity_headers is None
    assert b.timeout == 0.0 and b.idle_timeout == 60.0 and b.allow_websockets
    assert b.tls_skip_verify and b.tls_server_name == "old.example.com"
    assert b.pass_identity_headers is False
    assert b.allowed_domains == ("example.com", "example.org")
    assert b.allowed_idp_claims == (("groups", ("admins", "ops")), ("hd", ("example.com",)))
    assert b.set_response_headers == (("X-Num", "5"),)
    assert b.source == "routes.yaml:5"


def test_public_route_with_allow_lists_is_refused_as_in_pomerium() -> None:
    got = problems(
        """\
        routes:
          - from: https://a
            to: http://127.0.0.1:1
            allow_public_unauthenticated_access: true
            allowed_users: [alice@example.com]
        """
    )
    assert got[0].startswith("routes.yaml:4: routes[0].allow_public_unauthenticated_access:")


def test_tls_server_name_spellings_must_agree() -> None:
    got = problems(
        """\
        routes:
          - from: https://a
            to: https://127.0.0.1:1
            tls_server_name: a.internal
            tls_upstream_server_name: b.internal
        """
    )
    assert got == [
        "routes.yaml:5: routes[0].tls_upstream_server_name: differs from tls_server_name; "
        "set one of them"
    ]


def test_upstream_tls_material_inline_base64_raw_and_files(tmp_path: Path, test_ca: TestCA) -> None:
    client = test_ca.issue("vallum-client", client=True)
    cert_file, key_file = client.write(tmp_path)
    (tmp_path / "ca.pem").write_text(test_ca.cert_pem)
    config_file = tmp_path / "vallum.yaml"
    config_file.write_text(
        textwrap.dedent(
            f"""\
            routes:
              - from: https://a
                to: https://127.0.0.1:1
                tls_custom_ca: {b64(test_ca.cert_pem)}
                tls_client_cert: {b64(client.cert_pem)}
                tls_client_key: {b64(client.key_pem)}
              - from: https://b
                to: https://127.0.0.1:1
                tls_custom_ca_file: ca.pem
                tls_client_cert_file: {cert_file.name}
                tls_client_key_file: {key_file}
              - from: https://c
                to: https://127.0.0.1:1
                tls_custom_ca: |
            """
        )
        + textwrap.indent(test_ca.cert_pem, " " * 6)
    )
    s = configfile.load(str(config_file))
    a, b, c = s.routes
    assert a.upstream_tls_profile == b.upstream_tls_profile
    assert a.tls_custom_ca_pem == c.tls_custom_ca_pem
    assert a.tls_custom_ca_pem is not None and "BEGIN CERTIFICATE" in a.tls_custom_ca_pem
    assert s.watched_files == (
        str(config_file),
        str(tmp_path / "ca.pem"),
        str(cert_file),
        str(key_file),
    )


def test_inline_and_file_together_or_half_a_pair_are_errors(
    tmp_path: Path, test_ca: TestCA
) -> None:
    (tmp_path / "ca.pem").write_text(test_ca.cert_pem)
    got = problems(
        f"""\
        routes:
          - from: https://a
            to: https://127.0.0.1:1
            tls_custom_ca: {b64(test_ca.cert_pem)}
            tls_custom_ca_file: ca.pem
          - from: https://b
            to: https://127.0.0.1:1
            tls_client_cert: {b64(test_ca.cert_pem)}
          - from: https://c
            to: https://127.0.0.1:1
            tls_client_key_file: missing.key
            tls_custom_ca: bm90IHBlbQ==
        """,
        base=tmp_path,
    )
    assert (
        got[0] == "routes.yaml:5: routes[0].tls_custom_ca_file: set tls_custom_ca or "
        "tls_custom_ca_file, not both"
    )
    assert got[1].startswith(
        "routes.yaml:6: routes[1]: tls_client_cert and tls_client_key go together"
    )
    assert got[2].startswith(
        f"routes.yaml:11: routes[2].tls_client_key_file: cannot read {tmp_path}/missing.key"
    )
    assert (
        got[3] == "routes.yaml:12: routes[2].tls_custom_ca: base64 value does not decode to PEM "
        "(certificate)"
    )


# ---------------------------------------------------------------- global settings


def test_global_settings(tmp_path: Path, test_ca: TestCA) -> None:
    leaf = test_ca.issue("app.example.test")
    cert_file, key_file = leaf.write(tmp_path)
    (tmp_path / "ca.pem").write_text(test_ca.cert_pem)
    (tmp_path / "crl.pem").write_text(test_ca.crl_pem([]))
    (tmp_path / "secret").write_text(b64("x" * 32) + "\n")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    s = load(
        f"""\
        address: 0.0.0.0:443
        insecure_server: false
        certificates:
          - cert: {b64(leaf.cert_pem)}
            key: {b64(leaf.key_pem)}
          - cert_file: {cert_file.name}
            key_file: {key_file.name}
        certificate_file: {cert_file.name}
        certificate_key_file: {key_file.name}
        xff_num_trusted_hops: 1
        timeout_idle: 5m
        authenticate_service_url: https://authenticate.example.com
        idp_provider: google
        idp_provider_url: https://accounts.google.com
        idp_client_id: 123
        idp_client_secret_file: secret
        idp_scopes: openid,email
        idp_access_token_allowed_audiences: [api://vallum, other]
        cookie_secret_file: secret
        cookie_expire: 1h30m
        cookie_same_site: Strict
        signing_key: {b64(key_pem)}
        jwt_claims_headers: [email, given_name]
        jwt_issuer_format: uri
        downstream_mtls:
          ca_file: ca.pem
          crl: {b64(test_ca.crl_pem([]))}
          enforcement: reject_connection
          max_verify_depth: 2
        certificate_authority_file: ca.pem
        log_level: debug
        services: all
        shared_secret: whatever
        routes: []
        """,
        base=tmp_path,
    )
    assert len(s.certificates) == 3
    assert s.certificates[1].cert_file == str(cert_file)
    assert s.certificates[0].cert_pem == s.certificates[1].cert_pem
    assert s.xff_num_trusted_hops == 1 and s.timeout_idle == 300.0
    assert s.idp_provider == "google" and s.idp_client_id == "123"
    assert s.idp_client_secret == s.cookie_secret == b64("x" * 32)
    assert s.idp_scopes == ("openid", "email")
    assert s.idp_access_token_allowed_audiences == ("api://vallum", "other")
    assert s.cookie_expire == 5400.0 and s.cookie_same_site == "strict"
    assert s.signing_key == (key_pem,)
    assert s.jwt_claims_headers == (
        ("X-Pomerium-Claim-Email", "email"),
        ("X-Pomerium-Claim-Given-Name", "given_name"),
    )
    assert s.downstream_mtls is not None
    assert s.downstream_mtls.enforcement == "reject_connection"
    assert s.downstream_mtls.max_verify_depth == 2
    assert s.downstream_mtls.crl_pem is not None and "X509 CRL" in s.downstream_mtls.crl_pem
    assert s.certificate_authority_pem == s.downstream_mtls.ca_pem
    assert s.log_level == "debug" and s.routes == ()
    assert s.watched_files[0] == str(tmp_path / cert_file.name)  # loads() has no config file


def test_signing_key_forms_and_errors(test_ca: TestCA) -> None:
    leaf = test_ca.issue("x")
    s = load(f"signing_key: [{b64(leaf.key_pem)}, {b64(leaf.key_pem)}]\nroutes: []\n")
    assert len(s.signing_key) == 2
    bad = b64("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
    got = problems(f"signing_key: {bad}\n")
    assert got[0].startswith("routes.yaml:1: signing_key: not a usable key (PRIVATE KEY)")


def test_jwt_claims_headers_map_form() -> None:
    s = load("jwt_claims_headers: {X-Email: email, X-Groups: groups}\nroutes: []\n")
    assert s.jwt_claims_headers == (("X-Email", "email"), ("X-Groups", "groups"))


def test_settings_errors() -> None:
    got = problems(
        """\
        cookie_secret: tooshort
        cookie_same_site: sometimes
        jwt_issuer_format: url
        downstream_mtls: {enforcement: policy}
        xff_num_trusted_hops: -1
        authenticate_service_url: authenticate.example.com
        certificate_file: /nonexistent/cert.pem
        routes: {from: x}
        """
    )
    assert got[0].startswith("routes.yaml:1: cookie_secret: must hold at least 32 bytes")
    assert got[1].startswith("routes.yaml:2: cookie_same_site: expected one of lax, strict, none")
    assert got[2] == "routes.yaml:3: jwt_issuer_format: expected one of hostOnly, uri, got 'url'"
    assert got[3] == "routes.yaml:4: downstream_mtls: ca or ca_file is required for downstream mTLS"
    assert got[4].startswith("routes.yaml:5: xff_num_trusted_hops: expected a whole number")
    assert got[5].startswith("routes.yaml:6: authenticate_service_url: expected an http(s):// URL")
    assert got[6].startswith("routes.yaml:7: certificate_file: cannot read /nonexistent/cert.pem")
    assert got[7] == "routes.yaml:8: routes: expected a list of routes, got a mapping"


def test_policy_is_pomeriums_older_name_for_routes() -> None:
    s = load("policy:\n  - from: https://a\n    to: http://127.0.0.1:1\n")
    assert [r.host for r in s.routes] == ["a"]
    got = problems("routes: []\npolicy: []\n")
    assert got == [
        "routes.yaml:2: policy: set routes or policy (Pomerium's older name for routes), not both"
    ]


def test_load_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError) as info:
        configfile.load(str(tmp_path / "nope.yaml"))
    assert info.value.problems == (
        f"{tmp_path / 'nope.yaml'}: cannot read config file: No such file or directory",
    )


# ---------------------------------------------------------------- never a traceback

KEYS = sorted(configfile.SETTINGS_KEYS) + sorted(configfile.ROUTE_KEYS) + ["from", "to", "x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.floats(allow_nan=True),
    st.sampled_from(["30s", "http://127.0.0.1:1", "https://*.a", "/p", "(", "", "a,b", "%2e"]),
    st.text(max_size=12),
)
data = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), data, max_size=6))
def test_any_input_gives_settings_or_config_error(doc: dict[str, object]) -> None:
    text = yaml.safe_dump(doc)
    try:
        configfile.loads(text, "fuzz.yaml", base_dir="/nonexistent")
    except errors.ConfigError as exc:
        assert all(p.startswith("fuzz.yaml:") for p in exc.problems), exc.problems


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_any_text_gives_settings_or_config_error(text: str) -> None:
    try:
        configfile.loads(text, "fuzz.yaml", base_dir="/nonexistent")
    except errors.ConfigError as exc:
        assert all(p.startswith("fuzz.yaml:") for p in exc.problems), exc.problems


def test_policies_are_compiled_and_problems_point_into_them() -> None:
    got = problems(
        """\
        routes:
          - from: https://a
            to: http://127.0.0.1:1
            policy:
              - allow:
                  or:
                    - email: {is: a@example.com}
                    - bogus: 1
          - from: https://b
            to: http://127.0.0.1:1
            policy: {allow: {and: [{claim/groups: {nope: x}}]}}
        """
    )
    assert got[0].startswith("routes.yaml:8: routes[0].policy[0].allow.or[1].bogus: unknown")
    assert got[1].startswith("routes.yaml:11: routes[1].policy.allow.and[0].claim/groups.nope:")
    assert len(got) == 2


def test_route_paths_are_stored_normalised() -> None:
    s = load(
        """\
        jwt_claims_headers: "email groups"
        routes:
          - {from: https://a, to: http://127.0.0.1:1, prefix: "//api/./v1/"}
          - {from: https://a, to: http://127.0.0.1:1, path: "/caf%c3%a9"}
        """
    )
    assert [r.prefix or r.path for r in s.routes] == ["/api/v1/", "/caf%C3%A9"]
    assert [h for h, _ in s.jwt_claims_headers] == [
        "X-Pomerium-Claim-Email",
        "X-Pomerium-Claim-Groups",
    ]


def test_catch_all_host() -> None:
    s = load("routes:\n  - {from: 'https://*', to: 'http://127.0.0.1:1'}\n")
    assert s.routes[0].host == "*"
    m = routing.match(routing.build_table(s), "anything.example.org", "/x")
    assert m is not None and m.route_index == 0


# ---------------------------------------------------------------- route regexes (RE2)


def test_regexes_re2_cannot_run_are_refused_with_file_line_and_key() -> None:
    got = problems(
        """\
        routes:
          - from: https://a.example.com
            to: http://127.0.0.1:1
            regex: '^/(\\w+)/\\1$'
          - from: https://b.example.com
            to: http://127.0.0.1:2
            regex_rewrite_pattern: '^/(?!admin)(.*)$'
            regex_rewrite_substitution: '/\\1'
          - from: https://c.example.com
            to: http://127.0.0.1:3
            regex_rewrite_pattern: '^/api/(.*)$'
            regex_rewrite_substitution: '/\\2'
        """
    )
    assert got == [
        "routes.yaml:4: routes[0].regex: invalid regular expression: invalid escape sequence: "
        "\\1: backreferences are not supported by RE2",
        "routes.yaml:7: routes[1].regex_rewrite_pattern: invalid regular expression: invalid "
        "perl operator: (?!: lookahead is not supported (RE2 has no lookaround)",
        "routes.yaml:12: routes[2].regex_rewrite_substitution: invalid substitution: \\2 refers "
        "to group 2, but the pattern has 1 group(s)",
    ]


@pytest.mark.parametrize(
    ("option", "value", "place"),
    [
        ("set_request_headers", '{"X Team": blue}', "set_request_headers: 'X Team'"),
        ("set_request_headers", '{"X-Team:": blue}', "set_request_headers: 'X-Team:'"),
        ("set_request_headers", '{"X-A\\r\\nHost": evil}',
         "set_request_headers: 'X-A\\r\\nHost'"),
        ("set_request_headers", '{"": empty}', "set_request_headers: ''"),
        ("set_response_headers", '{"X-Frame (old)": DENY}', "set_response_headers: 'X-Frame"),
        ("remove_request_headers", '["X-Ok", "X Bad"]', "remove_request_headers[1]: 'X Bad'"),
        ("remove_request_headers", '"X-Ok, Bad:Name"', "remove_request_headers[1]: 'Bad:Name'"),
    ],
)
def test_header_names_must_be_tokens(option: str, value: str, place: str) -> None:
    """(A line break in a name is shown escaped: problems go to logs and Kubernetes Events.)"""
    (problem,) = problems(
        f"""\
        routes:
          - from: https://a
            to: http://127.0.0.1:1
            {option}: {value}
        """
    )
    assert problem.startswith(f"routes.yaml:4: routes[0].{place}"), problem
    assert "is not a header name" in problem


def test_header_names_with_every_token_character_load() -> None:
    s = load(
        """\
        jwt_claims_headers: {"X-Email.v2": email}
        routes:
          - from: https://a
            to: http://127.0.0.1:1
            set_request_headers: {"X-A_b.c!#$%&'*+^`|~9": v, X-Team: "a: b"}
            remove_request_headers: X-Debug, X_Old
        """
    )
    (route,) = s.routes
    assert route.set_request_headers == (("X-A_b.c!#$%&'*+^`|~9", "v"), ("X-Team", "a: b"))
    assert route.remove_request_headers == ("X-Debug", "X_Old")
    assert s.jwt_claims_headers == (("X-Email.v2", "email"),)
    (problem,) = problems('jwt_claims_headers: {"X Email": email}\n')
    assert problem.startswith("routes.yaml:1: jwt_claims_headers: 'X Email' is not a header")
