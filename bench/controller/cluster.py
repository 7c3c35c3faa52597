"""The API server of a controller benchmark, and writing thousands of objects to it quickly.

Why: the benchmarks need 3,000-5,000 Ingresses with their Services and EndpointSlices. One
``kubectl`` call per object would take minutes; here the ``kubernetes`` client writes them from
a thread pool (one HTTP/1.1 connection per thread, responses not parsed into models), a few
hundred objects a second on a small machine. Writing is never part of a measured figure.

Without a kubeconfig the benchmark starts its own local control plane
(``VALLUM_CP_DIR=<dir> e2e/control-plane up``, docs/e2e.md; each fresh ``up`` starts from an
empty etcd) and stops it at the end; with one, it writes into namespaces of its own (a random
prefix) and deletes them at the end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
CONTROL_PLANE = ROOT / "e2e" / "control-plane"
CRDS = ROOT / "crds"


class ClusterError(RuntimeError):
    """The API server could not be started or refused what the benchmark wrote."""


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is: its kubeconfig and a kubectl that talks to it."""

    kubeconfig: str
    kubectl: str
    own: bool
    """Started by this benchmark (objects vanish with it) or given (objects are cleaned up)."""


@contextlib.contextmanager
def control_plane(kubeconfig: str | None, state_dir: Path, keep: bool) -> Iterator[Endpoint]:
    """The given cluster, or a local control plane in ``state_dir`` for the run (stopped at
    the end unless ``keep``)."""
    if kubeconfig:
        yield Endpoint(kubeconfig, _kubectl_on_path(), own=False)
        return
    env = {**os.environ, "VALLUM_CP_DIR": str(state_dir)}
    up = subprocess.run([str(CONTROL_PLANE), "up"], capture_output=True, text=True, env=env,
                        timeout=1800, check=False)
    if up.returncode != 0:
        raise ClusterError(f"e2e/control-plane up failed: {up.stderr.strip()[-2000:]}")
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        if line.startswith("export ") and "=" in line
    )
    found = exports.get("KUBECONFIG", "")
    bin_dir = exports.get("PATH", "").split(":", 1)[0]
    if not found:
        raise ClusterError(f"e2e/control-plane up printed no KUBECONFIG: {up.stdout!r}")
    try:
        yield Endpoint(found, str(Path(bin_dir) / "kubectl"), own=True)
    finally:
        if not keep:
            subprocess.run([str(CONTROL_PLANE), "down"], capture_output=True, env=env,
                           timeout=120, check=False)


def _kubectl_on_path() -> str:
    cache = os.environ.get("VALLUM_K8S_CACHE") or str(Path.home() / ".cache/vallum/k8s")
    local = sorted(Path(cache).glob("v*/bin/kubectl"))
    return str(local[-1]) if local else "kubectl"


def install_crds(endpoint: Endpoint) -> None:
    """The vallum.dev CRDs (Policy, Settings), server-side applied and Established."""
    files = sorted(CRDS.glob("vallum.dev_*.yaml"))
    base = [endpoint.kubectl, "--kubeconfig", endpoint.kubeconfig]
    for args in (["apply", "--server-side", "--force-conflicts", *(f"-f={f}" for f in files)],
                 ["wait", "--for=condition=Established", "--timeout=60s",
                  *(f"-f={f}" for f in files)]):
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode != 0:
            raise ClusterError(f"kubectl {args[0]} of the CRDs failed: {done.stderr.strip()}")


class Kube:
    """Thread-safe writes of plain-dict objects through the ``kubernetes`` client."""

    def __init__(self, kubeconfig: str, threads: int = 16) -> None:
        self.threads = threads
        self._local = threading.local()
        self._kubeconfig = kubeconfig

    def _api(self) -> k8s.ApiClient:
        api: k8s.ApiClient | None = getattr(self._local, "api", None)
        if api is None:
            api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=self._kubeconfig)
            self._local.api = api
        return api

    def create(self, obj: Mapping[str, Any], *, exist_ok: bool = True) -> None:
        """POST ``obj``; an object that already exists is fine when ``exist_ok``."""
        api = self._api()
        body: Any = dict(obj)  # the client takes plain dicts as well as its models
        kind, meta = obj["kind"], obj["metadata"]
        namespace = meta.get("namespace", "")
        try:
            if kind == "Namespace":
                k8s.CoreV1Api(api).create_namespace(body, _preload_content=False)
            elif kind == "Service":
                k8s.CoreV1Api(api).create_namespaced_service(namespace, body,
                                                             _preload_content=False)
            elif kind == "EndpointSlice":
                k8s.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
                    namespace, body, _preload_content=False)
            elif kind == "Ingress":
                k8s.NetworkingV1Api(api).create_namespaced_ingress(namespace, body,
                                                                   _preload_content=False)
            elif kind == "IngressClass":
                k8s.NetworkingV1Api(api).create_ingress_class(body, _preload_content=False)
            elif kind == "Policy":
                k8s.CustomObjectsApi(api).create_namespaced_custom_object(
                    "vallum.dev", "v1alpha1", namespace, "policies", body,
                    _preload_content=False)
            else:
                raise ClusterError(f"the benchmark cannot write a {kind}")
        except ApiException as exc:
            if exc.status == 409 and exist_ok:
                return
            raise ClusterError(f"creating {kind} {namespace}/{meta['name']}: "
                               f"{exc.status} {exc.reason}: {str(exc.body)[:300]}") from None

    def patch_ingress(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        body: Any = dict(patch)
        k8s.NetworkingV1Api(self._api()).patch_namespaced_ingress(
            name, namespace, body, _preload_content=False)

    def delete_ingress(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            k8s.NetworkingV1Api(self._api()).delete_namespaced_ingress(
                name, namespace, _preload_content=False)

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            k8s.CoreV1Api(self._api()).delete_namespace(name, _preload_content=False)

    def delete_ingress_class(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            k8s.NetworkingV1Api(self._api()).delete_ingress_class(name, _preload_content=False)

    def run_all(self, jobs: Sequence[Callable[[], None]]) -> float:
        """Run ``jobs`` on the thread pool; the first failure is raised. Returns seconds."""
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            for future in concurrent.futures.as_completed([pool.submit(j) for j in jobs]):
                future.result()
        return time.monotonic() - started

    def create_all(self, objects: Sequence[Mapping[str, Any]]) -> float:
        return self.run_all([functools.partial(self.create, obj) for obj in objects])
