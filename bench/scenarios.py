"""The benchmark's scenarios: each one starts what it needs and yields the URL to load.

A scenario is a small entry in :data:`SCENARIOS`: a name, a title, which proxy and protocol it
stands for (so the report can pair Vallum with nginx) and a context-manager function taking the
:class:`Env`. Adding one (the identity issue's "authenticated route", say) is one function and one
entry; the runner in :mod:`bench.bench_proxy` needs no change.

Placement: the server under test is pinned to ``Env.server_cores``; wrk to ``Env.load_cores``;
the upstream nginx of proxy scenarios to ``Env.upstream_cores`` (the load cores when there are
too few cores to give it its own). Every scenario sends the same ``Host`` header and
gets the same small ``200 ok`` answer from the same kind of upstream.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.support.net import free_port

from bench import servers

HOST = "bench.vallum.test"
"""The host every request names; Vallum's route is for it, nginx answers any host."""


@dataclass(frozen=True, slots=True)
class Env:
    """What every scenario gets: a private folder, core placement, worker count, TLS files."""

    folder: Path
    workers: int
    server_cores: tuple[int, ...]
    load_cores: tuple[int, ...]
    cert_file: Path
    key_file: Path
    upstream_cores: tuple[int, ...] = ()
    """Where the upstream of proxy scenarios runs; empty: on the load cores, beside wrk."""
    python: str = ""
    """The interpreter ``vallum serve`` runs on (empty: the bench's own, :func:`servers.python`)."""

    @property
    def upstream_placement(self) -> tuple[int, ...]:
        return self.upstream_cores or self.load_cores

    @property
    def all_load_cores(self) -> tuple[int, ...]:
        """Every core that is not the server's: wrk's and the upstream's."""
        return tuple(sorted(set(self.load_cores) | set(self.upstream_cores)))

    def subfolder(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True, slots=True)
class Target:
    """Where wrk sends its load, with the headers every request carries."""

    url: str
    server_group: int
    """Process group of the server under test (its CPU use is measured during each run)."""
    headers: tuple[tuple[str, str], ...] = (("Host", HOST),)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    server: Literal["upstream", "nginx", "vallum", "vallum-auth"]
    scheme: Literal["http", "https"]
    start: Callable[[Env], ContextManager[Target]]
    paced: bool = False
    """Also measure p99 at half of this scenario's peak rate (the issue's latency target)."""


def _headers() -> dict[str, str]:
    return {"Host": HOST}


@contextlib.contextmanager
def _upstream(
    env: Env, name: str, cores: tuple[int, ...], workers: int
) -> Iterator[tuple[int, int]]:
    """The tiny upstream nginx: yields (port, process group)."""
    port = free_port()
    with servers.nginx(
        "upstream.conf.tmpl", {"workers": workers, "port": port},
        folder=env.subfolder(name), name=name, ready_url=f"http://127.0.0.1:{port}/",
        cores=cores,
    ) as proc:
        yield port, proc.pid


@contextlib.contextmanager
def direct(env: Env) -> Iterator[Target]:
    """(1) The upstream itself, as the server under test: the ceiling of this machine."""
    with _upstream(env, "upstream-direct", env.server_cores, env.workers) as (port, group):
        yield Target(f"http://127.0.0.1:{port}/", group)


def _nginx_proxy(scheme: Literal["http", "https"]) -> Callable[[Env], ContextManager[Target]]:
    @contextlib.contextmanager
    def start(env: Env) -> Iterator[Target]:
        """(2) Debian's nginx as a reverse proxy with keep-alive to the upstream."""
        upstream_name = f"upstream-for-nginx-{scheme}"
        with _upstream(env, upstream_name, env.upstream_placement, 1) as (upstream, _):
            port, tls_port = free_port(), free_port()
            url = (f"http://127.0.0.1:{port}/" if scheme == "http"
                   else f"https://127.0.0.1:{tls_port}/")
            values = {
                "workers": env.workers, "port": port, "tls_port": tls_port,
                "upstream_port": upstream, "cert_file": env.cert_file, "key_file": env.key_file,
            }
            with servers.nginx(
                "proxy.conf.tmpl", values, folder=env.subfolder(f"nginx-{scheme}"),
                name=f"nginx-proxy-{scheme}", ready_url=url, cores=env.server_cores,
            ) as proc:
                yield Target(url, proc.pid)

    return start


def vallum_config(
    scheme: Literal["http", "https"], port: int, upstream_port: int, cert_file: Path,
    key_file: Path,
) -> dict[str, object]:
    """Vallum's standalone config (Pomerium option names): one public route to the upstream."""
    config: dict[str, object] = {
        "address": f"127.0.0.1:{port}",
        "routes": [{
            "from": f"{scheme}://{HOST}",
            "to": f"http://127.0.0.1:{upstream_port}",
            "allow_public_unauthenticated_access": True,
        }],
    }
    if scheme == "http":
        config["insecure_server"] = True
    else:
        config["certificate_file"] = str(cert_file)
        config["certificate_key_file"] = str(key_file)
    return config


def authenticated_config(config: dict[str, object], signing_key_pem: str) -> dict[str, object]:
    """The same config with the route behind sign-in: a session cookie, a policy, an assertion.

    The identity provider is never contacted during the run (the session cookie is valid and not
    due for refresh), so its URL only has to be well-formed.
    """
    route = dict(config["routes"][0])  # type: ignore[index]
    del route["allow_public_unauthenticated_access"]
    route["policy"] = {"allow": {"and": [{"domain": {"is": "vallum.test"}},
                                         {"http_method": {"in": ["GET", "HEAD"]}}]}}
    route["pass_identity_headers"] = True
    return {
        **config,
        "routes": [route],
        "authenticate_service_url": "https://auth.vallum.test",
        "idp_provider_url": "https://idp.vallum.test",
        "idp_client_id": "bench",
        "idp_client_secret": "bench-secret",
        "cookie_secret": BENCH_COOKIE_SECRET,
        "cookie_secure": False,
        "signing_key": signing_key_pem,
        "jwt_claims_headers": ["email", "groups"],
    }


BENCH_COOKIE_SECRET = base64.b64encode(b"vallum-bench-cookie-secret-32by!").decode()


def session_cookie(config_file: Path) -> str:
    """A session cookie as Vallum sets it after sign-in, sealed with the config's cookie secret.

    A bench user with 20 groups and a session valid for the whole run; built with Vallum's own
    session code from the same settings ``vallum serve`` loads, so it is exactly what a browser
    would send back.
    """
    from vallum.core import configfile, identity
    from vallum.proxy import sessions

    settings = configfile.load(str(config_file))
    jar = sessions.SessionCookies(settings, sessions.Sealer(sessions.secret_bytes(settings)))
    now = time.time()
    who = identity.Identity(
        user="bench-user", email="bench@vallum.test", name="Bench User",
        groups=tuple(f"group-{n}" for n in range(20)), claims={"sub": "bench-user"},
        session_id="bench-session", expires_at=now + 3600,
    )
    session = sessions.Session(who, "", expires_at=now + 3600, refresh_at=now + 3600)
    return "; ".join(h.split(";")[0] for h in jar.set_headers(session))


def _vallum(
    scheme: Literal["http", "https"], *, authenticated: bool = False
) -> Callable[[Env], ContextManager[Target]]:
    kind = "vallum-auth" if authenticated else "vallum"

    @contextlib.contextmanager
    def start(env: Env) -> Iterator[Target]:
        """(3) ``vallum serve --workers N`` with a route to the same upstream: public, or (the
        identity issue's scenario) behind sign-in with a session cookie, policy and assertion."""
        upstream_name = f"upstream-for-{kind}-{scheme}"
        with _upstream(env, upstream_name, env.upstream_placement, 1) as (upstream, _):
            folder = env.subfolder(f"{kind}-{scheme}")
            port = free_port()
            config_file = folder / "vallum.yaml"
            config = vallum_config(scheme, port, upstream, env.cert_file, env.key_file)
            if authenticated:
                config = authenticated_config(config, _signing_key_pem())
            # JSON is YAML: no YAML writer needed, and the file stays readable.
            config_file.write_text(json.dumps(config, indent=2))
            headers: tuple[tuple[str, str], ...] = (("Host", HOST),)
            if authenticated:
                headers += (("Cookie", session_cookie(config_file)),)
            url = f"{scheme}://127.0.0.1:{port}/"
            cmd = [env.python or servers.python(), "-m", "vallum.cli", "serve",
                   "--config", str(config_file), "--workers", str(env.workers)]
            with servers.process(
                cmd, name=f"{kind}-{scheme}", ready_url=url, cores=env.server_cores,
                headers=dict(headers), folder=folder,
            ) as proc:
                yield Target(url, proc.pid, headers)

    return start


def _signing_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("direct", "upstream direct (nginx return 200)", "upstream", "http", direct),
    Scenario("nginx-http", "nginx reverse proxy, HTTP", "nginx", "http", _nginx_proxy("http")),
    Scenario("vallum-http", "vallum serve, public route, HTTP", "vallum", "http",
             _vallum("http"), paced=True),
    Scenario("nginx-https", "nginx reverse proxy, HTTPS", "nginx", "https",
             _nginx_proxy("https")),
    Scenario("vallum-https", "vallum serve, public route, HTTPS", "vallum", "https",
             _vallum("https"), paced=True),
    Scenario("vallum-auth-http", "vallum serve, signed-in route (cookie, policy, JWT), HTTP",
             "vallum-auth", "http", _vallum("http", authenticated=True)),
    Scenario("vallum-auth-https", "vallum serve, signed-in route (cookie, policy, JWT), HTTPS",
             "vallum-auth", "https", _vallum("https", authenticated=True)),
)


def by_name(names: list[str]) -> list[Scenario]:
    """The scenarios named, in the table's order; an unknown name is an error listing the known."""
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [s for s in SCENARIOS if s.name in names]
