"""Fixtures of the e2e suite: a real API server, a test upstream, ``vallum controller`` itself.

The suite runs against whatever ``KUBECONFIG`` points at (a kind cluster in CI); without it, it
starts the local control plane (``e2e/control-plane up``, docs/e2e.md) and stops it at the end
if it started it. When the Kubernetes binaries are missing and cannot be built (no ``go``), or
the upstream address cannot be added (not root), every test is skipped with the reason -- except
in CI (``$CI`` set), where a suite that did not run must not pass: there they fail.

Objects are written with ``kubectl apply -f -``, as users write them. Each test gets a namespace
of its own and the session an IngressClass and controller name of its own
(``vallum.dev/e2e-<random>``), so runs sharing one cluster do not see each other's Ingresses.
The session's ``controller`` runs with manifests/rbac.yaml's permissions (their ServiceAccount,
ClusterRole and Role bound in a namespace of the session's own, a TokenRequest token in a
kubeconfig of its own, its Lease in that namespace); the tests themselves use the admin
kubeconfig. Tests starting a :class:`Controller` of their own pass the admin kubeconfig (the
default) unless they give one.

Upstreams: the API server refuses loopback addresses in EndpointSlices, so the session adds
``10.200.0.1/32`` to ``lo`` (root; removed at the end when it added it) and the upstream listens
there as well as on 127.0.0.1 (for ``ExternalName: localhost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
E2E = ROOT / "e2e"
K8S_VERSION = "v1.34.2"
UPSTREAM_IP = "10.200.0.1"
READY_TIMEOUT = 60.0


def _bin_dir() -> pathlib.Path:
    cache = os.environ.get("VALLUM_K8S_CACHE") or str(pathlib.Path.home() / ".cache/vallum/k8s")
    return pathlib.Path(cache) / K8S_VERSION / "bin"


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason`` -- or, in CI (``$CI`` set), fail: a skipped e2e suite there would
    look green while testing nothing."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set: the e2e suite must run)", pytrace=False)
    pytest.skip(reason)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# -- the cluster --------------------------------------------------------------------------------


class Cluster:
    """The API server the suite talks to, driven with kubectl."""

    def __init__(self, kubeconfig: str, kubectl: str) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_path = kubectl

    @contextlib.contextmanager
    def temporary_namespace(self) -> Iterator[str]:
        """A namespace of its own (``e2e-<random>``), deleted afterwards (without waiting)."""
        name = f"e2e-{secrets.token_hex(4)}"
        self.kubectl("create", "namespace", name)
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args],
            input=input, capture_output=True, text=True, timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        extra = ["-n", namespace] if namespace else []
        self.kubectl("apply", *extra, "-f", "-", input=textwrap.dedent(manifest))

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        extra = ["-n", namespace] if namespace else []
        self.kubectl("delete", *extra, kind, name, "--wait=false")

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        extra = ["-n", namespace] if namespace else []
        out: dict[str, Any] = json.loads(self.kubectl("get", *extra, kind, name, "-o", "json"))
        return out


def _start_local_control_plane() -> tuple[str, str, bool]:
    """(kubeconfig, kubectl, started here) of the local control plane; skips when it cannot run."""
    bin_dir = _bin_dir()
    needed = ("kube-apiserver", "kubectl")
    if not all((bin_dir / name).exists() for name in needed) and shutil.which("go") is None:
        unavailable(
            f"e2e: no KUBECONFIG, the Kubernetes {K8S_VERSION} binaries are not in {bin_dir} and "
            "cannot be built here (no go); run e2e/build-k8s or set KUBECONFIG"
        )
    running = subprocess.run(
        [str(E2E / "control-plane"), "env"], capture_output=True, text=True
    ).returncode == 0
    up = subprocess.run(
        [str(E2E / "control-plane"), "up"], capture_output=True, text=True, timeout=1200
    )
    if up.returncode != 0:
        unavailable(f"e2e: e2e/control-plane up failed: {up.stderr.strip()[-2000:]}")
    kubeconfig = ""
    for line in up.stdout.splitlines():
        if line.startswith("export KUBECONFIG="):
            kubeconfig = line.split("=", 1)[1]
    if not kubeconfig:
        unavailable(f"e2e: e2e/control-plane up printed no KUBECONFIG: {up.stdout!r}")
    return kubeconfig, str(bin_dir / "kubectl"), not running


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    started = False
    if os.environ.get("KUBECONFIG"):
        kubeconfig = os.environ["KUBECONFIG"]
        local = _bin_dir() / "kubectl"
        kubectl = str(local) if local.exists() else (shutil.which("kubectl") or "")
        if not kubectl:
            unavailable("e2e: KUBECONFIG is set but there is no kubectl")
    else:
        kubeconfig, kubectl, started = _start_local_control_plane()
    found = Cluster(kubeconfig, kubectl)
    crds = sorted((ROOT / "crds").glob("vallum.dev_*.yaml"))
    if crds:
        for crd in crds:
            found.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        found.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                      *(f"-f={crd}" for crd in crds))
    try:
        yield found
    finally:
        if started:
            subprocess.run([str(E2E / "control-plane"), "down"], capture_output=True, timeout=60)


@contextlib.contextmanager
def replicas(
    cluster: Cluster, controller_name: str, log_dir: pathlib.Path, settings_name: str,
    lease_namespace: str, flags: dict[str, tuple[str, ...]],
) -> Iterator[dict[str, Controller]]:
    """Controllers sharing ``settings_name`` and the Lease in ``lease_namespace``, one per
    ``POD_NAME`` in ``flags`` (with those extra flags): all started at once, all ready, all
    stopped at the end."""
    running: dict[str, Controller] = {}
    try:
        for name, extra in flags.items():
            running[name] = Controller(
                cluster, controller_name, log_dir / f"{name}.log",
                extra=("--settings", settings_name, "--lease-namespace", lease_namespace,
                       *extra),
                env={"POD_NAME": name},
            )
            running[name].start()
        for controller in running.values():
            controller.wait_ready()
        yield running
    finally:
        for controller in running.values():
            controller.stop()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Any]:
    """A ``kubernetes`` ApiClient with the admin kubeconfig (for tests of the operator's own
    API calls: listing, watching)."""
    from vallum.operator import handlers

    client = handlers.api_client(handlers.load_client_config(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def upstream_address() -> Iterator[str]:
    """``10.200.0.1`` on ``lo`` for the session (added when missing, removed if added here)."""
    have = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                          text=True).stdout
    added = False
    if f" {UPSTREAM_IP}/" not in have:
        done = subprocess.run(["ip", "addr", "add", f"{UPSTREAM_IP}/32", "dev", "lo"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            unavailable(f"e2e: cannot add {UPSTREAM_IP}/32 to lo (needs root): "
                        f"{done.stderr.strip()}")
        added = True
    try:
        yield UPSTREAM_IP
    finally:
        if added:
            subprocess.run(["ip", "addr", "del", f"{UPSTREAM_IP}/32", "dev", "lo"],
                           capture_output=True)


# -- an identity: the manifests' RBAC objects in a namespace of their own ----------------------

RBAC = ROOT / "manifests" / "rbac.yaml"


def manifest_objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text(encoding="utf-8")) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"{RBAC} has {len(found)} {kind} objects"
    return found[0]


CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass",
                            "Settings"})
_SERVERS: dict[str, dict[str, Any]] = {}


def api_server(cluster: Cluster) -> dict[str, Any]:
    """The ``cluster`` entry (server, CA) of the suite's kubeconfig."""
    if cluster.kubeconfig not in _SERVERS:
        admin = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
        _SERVERS[cluster.kubeconfig] = admin["clusters"][0]["cluster"]
    return _SERVERS[cluster.kubeconfig]


class Identity:
    """The manifests' ServiceAccount with (a variation of) their ClusterRole and Role, bound in
    namespace ``home``, and (once created: :func:`create_all`) a kubeconfig with a token of that
    account. ``more``: other objects to apply with them (in ``home`` unless cluster-scoped)."""

    def __init__(self, cluster: Cluster, workdir: pathlib.Path, label: str,
                 change: Callable[[list[dict[str, Any]]], None] | None = None,
                 more: list[dict[str, Any]] | None = None) -> None:
        self.cluster = cluster
        self.suffix = secrets.token_hex(4)
        self.home = f"e2e-rbac-{self.suffix}"
        self.label = label
        objects = copy.deepcopy(manifest_objects())
        if change is not None:
            change(objects)
        self.objects = self._remapped(objects)
        extra = copy.deepcopy(more or [])
        for obj in extra:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"].setdefault("namespace", self.home)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.home}}
        self.manifest = [namespace, *self.objects, *extra]
        self.kubeconfig = workdir / f"{label}.kubeconfig"

    def create(self) -> Identity:
        create_all(self.cluster, [self])
        return self

    def login(self) -> None:
        """A token of the account (TokenRequest API), written into :attr:`kubeconfig`."""
        account = of_kind(self.objects, "ServiceAccount")["metadata"]["name"]
        token = self.cluster.kubectl("create", "token", account, "-n", self.home,
                                     "--duration=1h").strip()
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": api_server(self.cluster)}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": account, "context": {"cluster": "e2e", "user": account,
                                                       "namespace": self.home}}],
            "current-context": account,
        }))
        self.kubeconfig.chmod(0o600)

    def _remapped(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for obj in objects:
            meta = obj["metadata"]
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                meta["name"] = f"{meta['name']}-{self.suffix}"
            else:
                meta["namespace"] = self.home
            if "roleRef" in obj and obj["roleRef"]["kind"] == "ClusterRole":
                obj["roleRef"]["name"] = f"{obj['roleRef']['name']}-{self.suffix}"
            for subject in obj.get("subjects", ()):
                subject["namespace"] = self.home
        return objects

    def cleanup(self) -> None:
        delete_all(self.cluster, [(obj["kind"], obj["metadata"]["name"])
                                  for obj in self.manifest if obj["kind"] in CLUSTER_SCOPED])

    def api_client(self) -> Any:
        from vallum.operator import handlers

        return handlers.api_client(handlers.load_client_config(str(self.kubeconfig)))


def delete_all(cluster: Cluster, objects: list[tuple[str, str]]) -> None:
    """Delete these cluster-scoped (kind, name) objects, one ``kubectl delete`` per kind (a
    namespace without waiting for its objects to go)."""
    by_kind: dict[str, list[str]] = {}
    for kind, name in objects:
        by_kind.setdefault(kind, []).append(name)
    for kind, names in sorted(by_kind.items()):
        cluster.kubectl("delete", kind.lower(), *sorted(set(names)), "--ignore-not-found",
                        "--wait=false", check=False)


def create_all(cluster: Cluster, identities: list[Identity]) -> None:
    """Apply every identity's objects in one ``kubectl apply`` (each is a process start, and
    seconds on a busy machine), then log each in."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
        [obj for identity in identities for obj in identity.manifest]))
    for identity in identities:
        identity.login()


# -- the upstream ---------------------------------------------------------------------------------


class Upstream:
    """A real aiohttp server (own thread) answering JSON: who it is, what it received."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.port = _free_port(ip)
        self.local_port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="e2e-upstream")

    def _run(self) -> None:
        from aiohttp import web

        async def answer(request: web.Request) -> web.Response:
            return web.json_response({
                "upstream": f"{request.transport.get_extra_info('sockname')[0]}"
                            if request.transport else "",
                "path": request.path_qs,
                "host": request.host,
                "headers": dict(request.headers),
            })

        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, self.ip, self.port).start()
            await web.TCPSite(runner, "127.0.0.1", self.local_port).start()
            self._runner = runner
            self._ready.set()
            self._stop = asyncio.Event()
            await self._stop.wait()
            await runner.cleanup()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the e2e upstream did not start")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="session")
def upstream(upstream_address: str) -> Iterator[Upstream]:
    server = Upstream(upstream_address)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- vallum controller ----------------------------------------------------------------------------


class Controller:
    """A ``vallum controller`` process on free ports (plain HTTP), and an HTTP client for it."""

    def __init__(self, cluster: Cluster, controller_name: str, log_path: pathlib.Path,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 kubeconfig: str | None = None) -> None:
        self.cluster = cluster
        self.env = env or {}
        """Extra environment (e.g. ``POD_NAME``: the replica's identity in the Lease)."""
        self.controller_name = controller_name
        self.port = _free_port()
        self.admin_port = _free_port()
        self.log_path = log_path
        self.args = [
            sys.executable, "-m", "vallum.cli", "controller",
            "--kubeconfig", kubeconfig or cluster.kubeconfig,
            "--address", f"127.0.0.1:{self.port}",
            "--metrics-address", f"127.0.0.1:{self.admin_port}",
            "--insecure-server",
            "--controller-name", controller_name,
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=ROOT, env={**os.environ, **self.env})

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (the Lease is not handed back)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def admin(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET ``path`` on the admin listener: (status, JSON body or {}); (0, {}) once the
        process has ended: its free port may then be another test's controller's, whose
        answer must not be taken for this one's (seen with a dozen controllers starting at
        once on a loaded machine)."""
        if not self.running():
            return 0, {}
        return _get(f"http://127.0.0.1:{self.admin_port}{path}", {})

    def request(self, host: str, path: str = "/") -> tuple[int, dict[str, Any]]:
        """GET ``path`` on the proxy with this Host header: (status, JSON body or {}); (0, {})
        once the process has ended (see :meth:`admin`)."""
        if not self.running():
            return 0, {}
        return _get(f"http://127.0.0.1:{self.port}{path}", {"Host": host})

    def send(self, method: str, host: str, path: str = "/",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
        """``method`` ``path`` on the proxy with this Host and ``headers``: (status, response
        headers), redirects not followed."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, headers={"Host": host, **(headers or {})})
            response = conn.getresponse()
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}
        except OSError:
            return 0, {}
        finally:
            conn.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"vallum controller exited ({self.process.returncode}):\n{self.log()}")
            status, _ = self.admin("/readyz")
            if status == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"vallum controller not ready after {timeout} s:\n{self.log()}")

    def wait_for(self, host: str, want: Callable[[int, dict[str, Any]], bool],
                 path: str = "/", timeout: float = 15.0) -> tuple[int, dict[str, Any]]:
        """Poll ``host``/``path`` until ``want(status, body)``; fail with the last answer."""
        deadline = time.monotonic() + timeout
        last: tuple[int, dict[str, Any]] = (0, {})
        while time.monotonic() < deadline:
            last = self.request(host, path)
            if want(*last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"{host}{path}: still {last} after {timeout} s\n{self.log()}")


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        body = response.read()
    except OSError:
        return 0, {}
    finally:
        conn.close()
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {"text": body.decode("utf-8", "replace")}
    return response.status, data if isinstance(data, dict) else {"json": data}


@contextlib.contextmanager
def own_ingress_class(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """An IngressClass and controller name no other controller of the run handles:
    (class name, controller name)."""
    suffix = secrets.token_hex(4)
    name, controller_name = f"vallum-e2e-{suffix}", f"vallum.dev/e2e-{suffix}"
    cluster.apply(f"""
        apiVersion: networking.k8s.io/v1
        kind: IngressClass
        metadata: {{name: {name}}}
        spec: {{controller: {controller_name}}}
    """)
    try:
        yield name, controller_name
    finally:
        with contextlib.suppress(AssertionError):
            cluster.delete("ingressclass", name)


def events_about(cluster: Cluster, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    """The core/v1 Events in ``namespace`` whose involvedObject is ``kind`` ``name``."""
    found = json.loads(cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", f"involvedObject.kind={kind},involvedObject.name={name}",
    ))
    items: list[dict[str, Any]] = found.get("items", [])
    return items


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "",
               interval: float = 0.1) -> Any:
    """Poll ``check()`` until it returns something true (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def endpoint_slice(cluster: Cluster, namespace: str, name: str, service: str, port_name: str,
                   port: int, ip: str, ready: bool) -> None:
    """Apply EndpointSlice ``name`` of Service ``service``: one endpoint ``ip`` on ``port``."""
    cluster.apply(f"""
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {name}
          labels: {{kubernetes.io/service-name: {service}}}
        addressType: IPv4
        ports: [{{name: {port_name}, port: {port}, protocol: TCP}}]
        endpoints:
        - addresses: ["{ip}"]
          conditions: {{ready: {str(ready).lower()}}}
    """, namespace)


@contextlib.contextmanager
def waiting_for_settings(cluster: Cluster, ingress_class: str, log_dir: pathlib.Path,
                         extra: tuple[str, ...] = ()) -> Iterator[tuple[Controller, str]]:
    """A started ``vallum controller`` (with ``extra`` arguments) whose Settings object names a
    Secret that does not exist, so it cannot be ready until that object is deleted:
    (controller, Settings name). Stopped, and the Settings object deleted, afterwards."""
    name = f"e2e-{secrets.token_hex(4)}"
    cluster.apply(f"""
        apiVersion: vallum.dev/v1alpha1
        kind: Settings
        metadata: {{name: {name}}}
        spec: {{secrets: vallum-e2e-nowhere/missing}}
    """)
    controller_name = cluster.get("ingressclass", ingress_class)["spec"]["controller"]
    running = Controller(cluster, controller_name, log_dir / "controller.log",
                         extra=("--settings", name, *extra))
    running.start()
    try:
        yield running, name
    finally:
        running.stop()
        cluster.kubectl("delete", "settings", name, "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def ingress_class(cluster: Cluster) -> Iterator[str]:
    """An IngressClass of this session's own: (class name, controller name)."""
    suffix = secrets.token_hex(4)
    name = f"vallum-e2e-{suffix}"
    cluster.apply(f"""
        apiVersion: networking.k8s.io/v1
        kind: IngressClass
        metadata: {{name: {name}}}
        spec: {{controller: vallum.dev/e2e-{suffix}}}
    """)
    try:
        yield name
    finally:
        with contextlib.suppress(AssertionError):
            cluster.delete("ingressclass", name)


@pytest.fixture(scope="session")
def service_account(cluster: Cluster,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Identity]:
    """manifests/rbac.yaml's ServiceAccount, ClusterRole and Role for the session, in a
    namespace of its own, with a token in a kubeconfig of its own."""
    identity = Identity(cluster, tmp_path_factory.mktemp("service-account"), "controller")
    identity.create()
    try:
        yield identity
    finally:
        identity.cleanup()


@pytest.fixture(scope="session")
def controller(cluster: Cluster, ingress_class: str, upstream: Upstream,
               service_account: Identity,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One ``vallum controller`` for the session, ready (first complete table served), with
    the ServiceAccount's own permissions (the tests themselves keep the admin kubeconfig)."""
    spec = cluster.get("ingressclass", ingress_class)["spec"]
    running = Controller(cluster, spec["controller"],
                         tmp_path_factory.mktemp("controller") / "controller.log",
                         extra=("--lease-namespace", service_account.home),
                         kubeconfig=str(service_account.kubeconfig))
    running.start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    with cluster.temporary_namespace() as name:
        yield name
