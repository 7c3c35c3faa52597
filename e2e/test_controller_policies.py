"""``vallum controller``: a Policy object protecting an Ingress, and edits changing who gets in.

Issue 12, item 10: "a Policy protecting an Ingress; edits changing who gets in". An Ingress names
a ``vallum.dev/v1alpha1`` Policy with ``ingress.vallum.dev/policy-ref``; an anonymous request is
sent to sign in (a browser) or refused with 401 (an API client); a signed-in user the Policy
allows reaches the upstream and one it does not gets 403 with the reason. ``kubectl apply`` of an
edited Policy swaps the two within seconds, with the same sessions. Pomerium's
``ingress.pomerium.io/allowed_users`` on an Ingress does the same job without a Policy object.

The sessions are minted here with the Settings' ``cookie_secret`` by Vallum's own sealing code
(:mod:`vallum.proxy.sessions`, through :mod:`e2e.signed_in`), as a sign-in would have sealed
them: the identity provider plays no part in signed-in requests.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import conftest, signed_in, test_controller

JSON = {"Accept": "application/json"}


class Protected:
    """A controller signing users in with a known cookie secret, and its own IngressClass."""

    def __init__(self, cluster: conftest.Cluster, running: conftest.Controller,
                 class_name: str, cookie_secret: str) -> None:
        self.cluster = cluster
        self.running = running
        self.class_name = class_name
        self.cookie_secret = cookie_secret

    def cookie(self, email: str, groups: tuple[str, ...] = ()) -> str:
        """A ``Cookie`` header with a fresh session for ``email``, sealed as a sign-in seals it."""
        return signed_in.cookie(self.cookie_secret, email, groups)

    def get(self, host: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        """GET / on the proxy: (status, response headers, JSON body or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.running.port, timeout=5)
        try:
            conn.request("GET", "/", headers={"Host": host, **headers})
            response = conn.getresponse()
            raw = response.read()
        except OSError:
            return 0, {}, None
        finally:
            conn.close()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture(scope="module")
def protected(cluster: conftest.Cluster, upstream: conftest.Upstream,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    """A ``vallum controller`` whose Settings sign users in (cookie secret known here)."""
    with cluster.temporary_namespace() as home, conftest.own_ingress_class(cluster) as (
        class_name, controller_name
    ), signed_in.settings(cluster, home, "e2e-policies") as (settings_name, cookie_secret):
        running = conftest.Controller(
            cluster, controller_name, tmp_path_factory.mktemp("policies") / "controller.log",
            extra=("--settings", settings_name),
        )
        running.start()
        try:
            running.wait_ready()
            yield Protected(cluster, running, class_name, cookie_secret)
        finally:
            running.stop()


def policy(cluster: conftest.Cluster, namespace: str, name: str, allow: dict[str, Any]) -> None:
    """Apply Policy ``name`` whose spec is ``{allow: allow}`` (JSON is YAML)."""
    cluster.apply(f"""
        apiVersion: vallum.dev/v1alpha1
        kind: Policy
        metadata: {{name: {name}}}
        spec: {json.dumps({"allow": allow})}
    """, namespace)


def outcomes(site: Protected, host: str, cookies: dict[str, str]) -> dict[str, int]:
    """The status each named session gets on ``host``."""
    return {who: site.get(host, {**JSON, "Cookie": cookie})[0] for who, cookie in cookies.items()}


def test_a_policy_protects_an_ingress_and_an_edit_changes_who_gets_in(
    protected: Protected, upstream: conftest.Upstream, namespace: str,
) -> None:
    cluster, host = protected.cluster, f"team.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    policy(cluster, namespace, "team", {"or": [{"email": {"is": "alice@e2e.test"}}]})
    test_controller.ingress(cluster, namespace, protected.class_name, host,
                            annotations={"ingress.vallum.dev/policy-ref": "team"})
    cookies = {"alice": protected.cookie("alice@e2e.test"),
               "bob": protected.cookie("bob@e2e.test", groups=("oncall",))}
    conftest.wait_until(lambda: protected.get(host, JSON)[0] == 401,
                        what="the protected route live")

    status, headers, _ = protected.get(host, {"Accept": "text/html"})  # a browser: sign in
    assert status == 302, (status, headers)
    assert headers["location"].startswith("https://auth.e2e.test/"), headers
    assert "sign_in" in headers["location"], headers
    status, _, body = protected.get(host, {**JSON, "Cookie": cookies["alice"]})
    assert status == 200 and body["upstream"] == upstream.ip, body
    assert "_vallum" not in body["headers"].get("Cookie", "")  # the session stays here
    status, _, body = protected.get(host, {**JSON, "Cookie": cookies["bob"]})
    assert status == 403, body
    assert body["message"] and body["message"] != "Forbidden", body  # says why
    assert "email" in body["message"], body

    policy(cluster, namespace, "team", {"or": [{"groups": {"has": "oncall"}}]})
    applied = time.monotonic()
    conftest.wait_until(lambda: outcomes(protected, host, cookies) == {"alice": 403, "bob": 200},
                        timeout=5.0, interval=0.05, what="the edited Policy live")
    took = time.monotonic() - applied
    assert took < 5.0, f"{took:.2f} s"
    status, _, body = protected.get(host, {**JSON, "Cookie": cookies["alice"]})
    assert status == 403 and "oncall" in body["message"], body
    ready = conftest.wait_until(
        lambda: [c for c in (cluster.get("policy", "team", namespace).get("status") or {})
                 .get("conditions", []) if c.get("type") == "Ready" and c.get("status") == "True"],
        what="the Policy's Ready condition",
    )
    assert ready


def test_pomerium_allowed_users_annotation(
    protected: Protected, upstream: conftest.Upstream, namespace: str,
) -> None:
    cluster, host = protected.cluster, f"users.{namespace}.e2e.test"
    test_controller.backend(cluster, namespace, upstream)
    test_controller.ingress(cluster, namespace, protected.class_name, host,
                            annotations={"ingress.pomerium.io/allowed_users": '["bob@e2e.test"]'})
    cookies = {"alice": protected.cookie("alice@e2e.test"),
               "bob": protected.cookie("bob@e2e.test")}
    conftest.wait_until(lambda: outcomes(protected, host, cookies) == {"alice": 403, "bob": 200},
                        what="allowed_users live")
    assert protected.get(host, JSON)[0] == 401  # anonymous
    test_controller.ingress(cluster, namespace, protected.class_name, host,
                            annotations={"ingress.pomerium.io/allowed_users": "alice@e2e.test"})
    conftest.wait_until(lambda: outcomes(protected, host, cookies) == {"alice": 200, "bob": 403},
                        timeout=5.0, interval=0.05, what="the edited allowed_users live")
