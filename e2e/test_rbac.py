"""The RBAC of ``manifests/rbac.yaml`` proven against a real API server (issue 13, item 4).

``vallum controller`` runs here with the identity the manifests give it: their ServiceAccount,
ClusterRole and Role (namespace and cluster-wide names changed so runs do not collide), a token
from the TokenRequest API (``kubectl create token``) in a kubeconfig of its own. With exactly
those rules it becomes ready, serves an Ingress (and one applied after its start), writes the
Ingress's Event and status and the Settings' condition, takes the Lease and shares a sign-out
through a ConfigMap -- and its log has no refusal ("Forbidden") at all. With any one rule taken
away it does not fully work: each such run is started beside the others and checked for what
that rule is for, and for the refusal in its log; so are three verbs taken away alone (a
Secret's get, the watches of Ingresses and of Policies/Settings). The Role's verbs one by one
(the Lease's get/create/update, the sign-outs' create/delete) are checked with the
controller's own classes (:class:`vallum.operator.lease.Elector`,
:class:`vallum.operator.revocations.ClusterState`) called with that identity: pruning ended
sign-outs happens once a minute in the process, too slow to wait for here.

All the controller runs start at once (module fixture) so the whole file takes about as long
as the slowest start, not the sum of them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from e2e import conftest, signed_in, test_controller

SIGNED_IN = {"ingress.pomerium.io/allow_any_authenticated_user": "true"}
SETTLE = 60.0
"""How long a run may take to show everything it can do (many start at once on 2 cores)."""


def rule_name(kind: str, rule: dict[str, Any]) -> str:
    groups = ",".join(g or "core" for g in rule["apiGroups"])
    return f"{kind}:{groups}:{'+'.join(rule['resources'])}"


def without_rule(kind: str, index: int) -> Callable[[list[dict[str, Any]]], None]:
    def change(objects: list[dict[str, Any]]) -> None:
        del conftest.of_kind(objects, kind)["rules"][index]
    return change


def without_verb(kind: str, resource: str, verb: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(objects: list[dict[str, Any]]) -> None:
        rule = next(r for r in conftest.of_kind(objects, kind)["rules"]
                    if resource in r["resources"])
        assert verb in rule["verbs"], (resource, verb)
        rule["verbs"].remove(verb)
    return change


# -- a controller run with an identity, and what it achieved ----------------------------------


class Run:
    """``vallum controller`` with an :class:`Identity`, its own IngressClass, Settings, a public
    Ingress and the ``vallum-proxy`` Service it publishes, all in its home namespace."""

    def __init__(self, cluster: conftest.Cluster, upstream: conftest.Upstream,
                 workdir: pathlib.Path, label: str, bootstrap: dict[str, Any],
                 change: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.cluster = cluster
        self.label = label
        suffix = secrets.token_hex(4)
        self.class_name = f"vallum-{suffix}"
        self.controller_name = f"vallum.dev/e2e-rbac-{suffix}"
        self.settings = f"e2e-rbac-{suffix}"
        self.pod_name = f"vallum-{label}"
        world = [
            {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
             "metadata": {"name": self.class_name},
             "spec": {"controller": self.controller_name}},
            bootstrap,
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "idp"},
             "stringData": {"client_id": "vallum", "client_secret": "not-used-here"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vallum-proxy"},
             "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
             "spec": {"ports": [{"name": "http", "port": 80, "targetPort": upstream.port}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "app-1", "labels": {"kubernetes.io/service-name": "app"}},
             "addressType": "IPv4",
             "ports": [{"name": "http", "port": upstream.port, "protocol": "TCP"}],
             "endpoints": [{"addresses": [upstream.ip], "conditions": {"ready": True}}]},
        ]
        self.identity = conftest.Identity(cluster, workdir, label, change, world)
        home = self.home = self.identity.home
        self.host = f"public.{home}.e2e.test"
        self.later_host = f"later.{home}.e2e.test"
        world.append({  # as test_controller.ingress writes it
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": home,
                         "annotations": test_controller.PUBLIC},
            "spec": {"ingressClassName": self.class_name, "rules": [{
                "host": self.host, "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]},
        })
        self.identity.manifest.append(world[-1])
        self.controller = conftest.Controller(
            conftest.Cluster(str(self.identity.kubeconfig), cluster.kubectl_path),
            self.controller_name, workdir / f"{label}.log",
            extra=("--settings", self.settings, "--lease-namespace", home,
                   "--publish-service", f"{home}/vallum-proxy"),
            env={"POD_NAME": self.pod_name},
        )
        self.settings_applied = False

    def after_ready(self) -> None:
        """What is applied once the run is ready: the Settings object (its Secrets were listed
        before anything named them, their data not kept, so the controller must GET them;
        and kopf must be watching Settings) and a second Ingress (the Ingress watch)."""
        self.cluster.apply(f"""
            apiVersion: vallum.dev/v1alpha1
            kind: Settings
            metadata: {{name: {self.settings}}}
            spec:
              secrets: {self.home}/bootstrap
              authenticate: {{url: "https://auth.{self.home}.e2e.test"}}
              identityProvider: {{provider: oidc, url: "https://127.0.0.1:9",
                                  secret: {self.home}/idp}}
              pomeriumCompatibility: true
        """)
        test_controller.ingress(self.cluster, self.home, self.class_name, self.later_host,
                                name="later")
        self.settings_applied = True

    def owned(self) -> list[dict[str, Any]]:
        """The cluster-scoped objects of this run (its namespace holds the rest)."""
        return [obj for obj in [*self.identity.manifest,
                                {"kind": "Settings", "metadata": {"name": self.settings}}]
                if obj["kind"] in conftest.CLUSTER_SCOPED]

    def log(self) -> str:
        return self.controller.log_path.read_text(errors="replace")

    # what it achieved, each a check of what the cluster or the proxy shows
    def ready(self) -> bool:
        return self.controller.admin("/readyz")[0] == 200

    def serves(self) -> bool:
        return test_controller.reached(*self.controller.request(self.host))

    def follows(self) -> bool:
        """An Ingress applied after the start is served."""
        return self.settings_applied and test_controller.reached(
            *self.controller.request(self.later_host))

    def event(self) -> bool:
        return any(e.get("reason") == "Updated" and e.get("reportingInstance") == self.pod_name
                   for e in conftest.events_about(self.cluster, self.home, "Ingress", "web"))

    def status(self) -> bool:
        ip = self.cluster.get("service", "vallum-proxy", self.home)["spec"]["clusterIP"]
        found = self.cluster.get("ingress", "web", self.home).get("status") or {}
        return bool(found.get("loadBalancer", {}).get("ingress") == [{"ip": ip}])

    def settings_ready(self) -> bool:
        if not self.settings_applied:
            return False
        found = self.cluster.get("settings", self.settings).get("status") or {}
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in found.get("conditions") or ())

    def lease(self) -> bool:
        leases = json.loads(self.cluster.kubectl("get", "leases", "-n", self.home, "-o", "json"))
        return any((item.get("spec") or {}).get("holderIdentity") == self.pod_name
                   for item in leases["items"])

    CHECKS = ("ready", "serves", "follows", "event", "status", "settings_ready", "lease")

    def achieved(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name)()) for name in self.CHECKS}


def refusals(log: str) -> list[str]:
    """Log lines that tell of a refused request: the API server's 403 is "Forbidden" in every
    form the controller logs it (``403 Forbidden``, the client's ``Reason: Forbidden``, kopf's
    ``APIForbiddenError``); a bare "403" could be a timestamp's milliseconds."""
    return [line for line in log.splitlines() if "forbidden" in line.lower()]


# -- the variants: the manifests' rules, and each one taken away -------------------------------

NOT_READY = frozenset(Run.CHECKS)
WRITES = frozenset({"event", "status", "settings_ready"})


def _variants() -> list[tuple[str, Callable[[list[dict[str, Any]]], None] | None,
                              frozenset[str], str]]:
    """(label, change to the RBAC objects, the checks that must fail, a word the refusal in the
    log names) for every rule of the ClusterRole and the Role taken away, and for the one verb
    of a read rule the runs exercise apart."""
    objects = conftest.manifest_objects()
    found: list[tuple[str, Callable[[list[dict[str, Any]]], None] | None, frozenset[str],
                      str]] = []
    for kind in ("ClusterRole", "Role"):
        for index, rule in enumerate(conftest.of_kind(objects, kind)["rules"]):
            resources = set(rule["resources"])
            word = sorted(resources)[0]  # what the refusal in the log names
            if resources == {"customresourcedefinitions"}:
                broken: frozenset[str] = frozenset()  # kopf retries, then goes on without
            elif resources == {"ingresses/status"}:
                broken, word = frozenset({"status"}), "ingresses"
            elif resources <= {"policies/status", "settings/status"}:
                broken, word = frozenset({"settings_ready"}), "settings"  # no Policy here
            elif resources == {"events"}:
                broken = frozenset({"event"})
            elif resources == {"leases"}:
                broken, word = WRITES | {"lease"}, "lease"  # no holder: nobody writes
            else:  # a kind listed before the first table, or the shared sign-outs
                broken = NOT_READY
                if "vallum.dev" in rule["apiGroups"]:
                    word = "vallum.dev"  # policies or settings, whichever LIST fails first
            found.append((rule_name(kind, rule), without_rule(kind, index), broken, word))
    # Verbs taken away alone where the runs show their use: a Secret's GET (the Settings'
    # Secrets, not kept when listed: every later table waits for them, so the later Ingress
    # is not served either), and the watches of Ingresses and of Policies/Settings.
    found.append(("ClusterRole:core:secrets-get", without_verb("ClusterRole", "secrets", "get"),
                  frozenset({"settings_ready", "follows"}), "secrets"))
    found.append(("ClusterRole:networking.k8s.io:ingresses-watch",
                  without_verb("ClusterRole", "ingresses", "watch"), frozenset({"follows"}),
                  "ingresses"))
    found.append(("ClusterRole:vallum.dev:policies+settings-watch",
                  without_verb("ClusterRole", "settings", "watch"), frozenset({"settings_ready"}),
                  "vallum.dev"))
    return found


VARIANTS = _variants()


@pytest.fixture(scope="module")
def bootstrap(cluster: conftest.Cluster,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The ``bootstrap`` Secret made by docs/install.md's command (32 random bytes in base64
    for ``cookie_secret``, ``vallum keys generate`` for ``signing_key``), with
    ``--dry-run=client`` so that each run applies it in its own namespace."""
    path = tmp_path_factory.mktemp("bootstrap") / "signing_key.pem"
    done = subprocess.run([sys.executable, "-m", "vallum.cli", "keys", "generate"],
                          capture_output=True, text=True, check=True, cwd=conftest.ROOT)
    path.write_text(done.stdout)
    cookie_secret = base64.b64encode(os.urandom(32)).decode()
    secret: dict[str, Any] = json.loads(cluster.kubectl(
        "create", "secret", "generic", "bootstrap", f"--from-literal=cookie_secret={cookie_secret}",
        f"--from-file=signing_key={path}", "--dry-run=client", "-o", "json"))
    return secret


@pytest.fixture(scope="module")
def runs(cluster: conftest.Cluster, upstream: conftest.Upstream,
         bootstrap: dict[str, Any],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Every variant's controller, started at once."""
    workdir = tmp_path_factory.mktemp("rbac")
    started: dict[str, Run] = {}
    try:
        started["manifests"] = Run(cluster, upstream, workdir, "manifests", bootstrap)
        for number, (label, change, _, _) in enumerate(VARIANTS):
            started[label] = Run(cluster, upstream, workdir, f"without-{number}", bootstrap,
                                 change)
        conftest.create_all(cluster, [run.identity for run in started.values()])
        for run in started.values():
            run.controller.start()
        yield started
    finally:
        for run in started.values():  # all told to stop first: they drain at the same time
            process = run.controller.process
            if process is not None and process.poll() is None:
                process.terminate()
        for run in started.values():
            run.controller.stop()
        conftest.delete_all(cluster, [(obj["kind"], obj["metadata"]["name"])
                             for run in started.values() for obj in run.owned()])


def settle(run: Run, want: frozenset[str]) -> dict[str, bool]:
    """Poll until every check in ``want`` holds (or SETTLE passes); what was achieved. What
    comes after the start is applied once the run is ready (:meth:`Run.after_ready`)."""
    deadline = time.monotonic() + SETTLE
    while True:
        if not run.settings_applied and run.ready():
            run.after_ready()
        got = run.achieved()
        if all(got[name] for name in want) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_with_the_manifests_rbac_the_controller_fully_works_and_is_never_refused(
    runs: dict[str, Run],
) -> None:
    run = runs["manifests"]
    got = settle(run, frozenset(Run.CHECKS))
    assert all(got.values()), (got, run.controller.log())
    # A sign-out is shared with the other replicas through a ConfigMap in the home namespace.
    host = f"signed.{run.home}.e2e.test"
    test_controller.ingress(run.cluster, run.home, run.class_name, host, name="signed",
                            annotations=SIGNED_IN)
    # The controller keys sessions with the Secret's bytes (the base64 text itself, here), so
    # the routes-file cookie_secret they make is the Secret's data field as the API shows it.
    secret = run.cluster.get("secret", "bootstrap", run.home)["data"]["cookie_secret"]
    cookie = signed_in.cookie(secret)
    headers = {"Cookie": cookie, "Accept": "application/json"}
    conftest.wait_until(lambda: run.controller.send("GET", host, "/", headers)[0] == 200,
                        what="the signed-in request served")
    status, _ = run.controller.send("POST", host, "/.pomerium/sign_out",
                                    {"Cookie": cookie, "Origin": f"http://{host}"})
    assert status == 302, run.controller.log()

    def shared() -> list[dict[str, Any]]:
        found = json.loads(run.cluster.kubectl(
            "get", "configmaps", "-n", run.home, "-l", "vallum.dev/revocation", "-o", "json"))
        items: list[dict[str, Any]] = found["items"]
        return items

    conftest.wait_until(shared, what="the revocation ConfigMap")
    time.sleep(1)  # anything refused meanwhile is in the log by now
    assert refusals(run.log()) == [], run.log()[-4000:]


@pytest.mark.parametrize(("label", "broken", "word"),
                         [(label, broken, word) for label, _, broken, word in VARIANTS],
                         ids=[label for label, *_ in VARIANTS])
def test_without_any_one_rule_the_controller_does_not_fully_work(
    runs: dict[str, Run], label: str, broken: frozenset[str], word: str,
) -> None:
    run = runs[label]
    settle(run, frozenset(Run.CHECKS) - broken)  # whatever it can still do, it does
    # The API server refused it, on the resource of the missing rule ...
    conftest.wait_until(lambda: [line for line in refusals(run.log())
                                 if word.lower() in line.lower()],
                        timeout=SETTLE, what=f"a refusal naming {word} in the log")
    # ... and after that refusal exactly what the rule is for is missing.
    got = run.achieved()
    assert {name for name, ok in got.items() if not ok} == set(broken), (got, run.log()[-3000:])


# -- the Role's verbs, one at a time, with the controller's own classes ------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("rbac-verbs")


@pytest.mark.parametrize("verb", [None, "get", "create", "update"])
def test_the_lease_needs_get_create_and_update(
    cluster: conftest.Cluster, workdir: pathlib.Path, verb: str | None,
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from vallum.operator import lease

    identity = conftest.Identity(cluster, workdir, f"lease-{verb}",
                        None if verb is None else without_verb("Role", "leases", verb)).create()
    try:
        elector = lease.Elector(client.CoordinationV1Api(identity.api_client()), identity.home,
                                "vallum-e2e", "replica-a")
        if verb is None:
            assert elector.step() and elector.step()  # created, then renewed
            return
        with pytest.raises(ApiException) as refused:
            elector.step()  # get (404: create), create
            elector.step()  # get, update (the renewal)
        assert refused.value.status == 403
        assert verb in str(refused.value.body), refused.value.body
    finally:
        identity.cleanup()


@pytest.mark.parametrize("verb", [None, "create", "delete"])
def test_sign_outs_need_configmap_create_and_delete(
    cluster: conftest.Cluster, workdir: pathlib.Path, verb: str | None,
) -> None:
    from vallum.operator import revocations
    from vallum.proxy import session_state

    identity = conftest.Identity(cluster, workdir, f"configmaps-{verb}",
                        None if verb is None else without_verb("Role", "configmaps", verb)).create()
    state = revocations.ClusterState.connect(session_state.LocalState(), identity.api_client(),
                                             identity.home)
    try:
        session = f"e2e-{secrets.token_hex(8)}"
        asyncio.run(state.revoke(session, time.time() + 600))  # a sign-out
        names = cluster.kubectl("get", "configmaps", "-n", identity.home, "-o", "name")
        assert (revocations.object_name(session) in names) == (verb != "create"), names
        ended = revocations.revocation(f"e2e-{secrets.token_hex(8)}", time.time() - 60,
                                       identity.home)
        cluster.apply(yaml.safe_dump(ended), identity.home)  # a session that has ended
        deleted = state.prune_expired()  # what the Lease holder does once a minute
        names = cluster.kubectl("get", "configmaps", "-n", identity.home, "-o", "name")
        gone = ended["metadata"]["name"] not in names
        assert (deleted >= 1 and gone) == (verb != "delete"), (deleted, names)
    finally:
        state.close()
        identity.cleanup()


def test_every_verb_granted_is_one_the_tests_take_away() -> None:
    """A verb added to rbac.yaml must come with a test that shows it is needed: the reads are
    list and watch (the first LIST, then the watches) plus get for Secrets only; the Lease's and
    the ConfigMaps' verbs are the ones the tests above take away one at a time."""
    objects = conftest.manifest_objects()
    for rule in conftest.of_kind(objects, "ClusterRole")["rules"]:
        resources = set(rule["resources"])
        if any("/" in name for name in resources):
            assert rule["verbs"] == ["patch"], rule
        elif resources == {"events"}:
            assert rule["verbs"] == ["create"], rule
        elif resources == {"secrets"}:
            assert rule["verbs"] == ["get", "list", "watch"], rule
        else:
            assert rule["verbs"] == ["list", "watch"], rule
    role = {name: rule["verbs"] for rule in conftest.of_kind(objects, "Role")["rules"]
            for name in rule["resources"]}
    assert role == {"leases": ["get", "create", "update"],
                    "configmaps": ["list", "watch", "create", "delete"]}
