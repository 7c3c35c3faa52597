"""``vallum controller``: serve the Ingresses, Policies and Settings of a Kubernetes cluster.

The same data plane as ``vallum serve`` (:class:`vallum.proxy.server.Server`: listeners,
``TableHolder``, identity gate, admin listener), with another source of tables: kopf's watches
fill :mod:`vallum.operator.store`, and :mod:`vallum.operator.controller` translates the store
into route tables and publishes them here. This module is the only place where the operator and
the proxy meet.

Threads: kopf, the store and the translation run on an event loop of their own in a second
thread; the proxy keeps the main thread's loop (uvloop). Why: a translation of thousands of
Ingresses is CPU work of tens to hundreds of milliseconds; on the proxy's loop it would stall
every request for that long, while in a thread the interpreter switches between the two every
few milliseconds (``sys.getswitchinterval``), so requests on unchanged routes keep flowing while
1,000 changes stream in. Tables cross over with ``run_coroutine_threadsafe``; the swap itself
happens on the proxy's loop (:meth:`Server.publish`), as a file reload's does.

Garbage collection: the store, kopf's caches and a table of thousands of routes are millions of
tracked objects, and a full collection walks them all while holding the interpreter lock
(measured: about 1 s with 5,000 Ingresses, Services and EndpointSlices, a stall of every request
on every route). After each table is served the objects alive then are moved out of the
collector's reach with ``gc.freeze()``; they are still freed by reference counting when dropped
(tables, objects and snapshots hold no reference cycles), and collections then walk only what
was made since.

Workers: with ``--workers N`` (N > 1) this process serves nothing itself; it forks N processes
that do, before it reads credentials or starts a thread, and sends each of them every new
table (:mod:`vallum.cli.controller_workers`). ``/readyz`` is then this process's.

Start: nothing listens on ``--address`` until the first complete table (every kind listed)
exists and the sign-outs shared by the replicas are read; meanwhile the admin listener answers
``/healthz`` 200 and ``/readyz`` 503, so a pod is alive but not ready while it syncs.

Replicas (:mod:`vallum.operator.leadership`): every replica serves; the one holding the Lease
(``--lease-namespace``/``--lease-name``) writes Events and status. Sign-outs are shared through
ConfigMaps in the Lease's namespace (:mod:`vallum.operator.revocations`), plugged into the
identity gate as its session state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from vallum.cli import controller_workers, revocation_bridge
from vallum.core import config, errors, routing
from vallum.operator import controller as controller_mod
from vallum.operator import leadership, revocations, translate
from vallum.operator import snapshot as snap
from vallum.operator import status as status_mod
from vallum.operator import store as store_mod
from vallum.proxy import identity, logs, metrics, server, session_state

log = logging.getLogger("vallum.controller")

DEFAULT_CONTROLLER_NAME = "vallum.dev/ingress-controller"
MAX_WORKERS = 256


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "controller",
        help="run the Kubernetes ingress controller",
        description=(
            "Watch Ingresses (of the IngressClass whose spec.controller is --controller-name), "
            "their Services, EndpointSlices and Secrets, vallum.dev Policy objects and the "
            "Settings object named by --settings, and serve them with the same proxy as "
            "`vallum serve`. Uses the in-cluster service account unless --kubeconfig is given "
            "(outside a cluster, $KUBECONFIG or ~/.kube/config). /readyz on --metrics-address "
            "is not ready until the first complete table is served."
        ),
    )
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file to use")
    parser.add_argument(
        "--address", required=True, metavar="HOST:PORT",
        help="where to serve HTTPS (plain HTTP with --insecure-server), e.g. :443",
    )
    parser.add_argument(
        "--http-redirect-address", metavar="HOST:PORT",
        help="a plain-HTTP listener: redirects to HTTPS, except the challenges of cert-manager's "
             "HTTP-01 solver Ingresses, which it serves, e.g. :80",
    )
    parser.add_argument(
        "--metrics-address", metavar="HOST:PORT",
        help="the admin listener: /healthz, /readyz, /metrics",
    )
    parser.add_argument(
        "--insecure-server", action="store_true",
        help="serve plain HTTP on --address (TLS terminated in front of Vallum, or tests)",
    )
    parser.add_argument(
        "--controller-name", default=DEFAULT_CONTROLLER_NAME, metavar="NAME",
        help=f"the IngressClass spec.controller this controller handles "
             f"(default {DEFAULT_CONTROLLER_NAME})",
    )
    parser.add_argument(
        "--settings", default="global", metavar="NAME",
        help="the cluster-scoped vallum.dev Settings object to use (default global)",
    )
    parser.add_argument(
        "--namespaces", type=_namespaces, metavar="A,B",
        help="watch only these namespaces (default: all); Secrets named by the Settings object "
             "must be in one of them",
    )
    publish = parser.add_mutually_exclusive_group()
    publish.add_argument(
        "--publish-service", type=_service, metavar="NS/NAME",
        help="copy this Service's addresses into each live Ingress's status.loadBalancer, "
             "updated when the Service changes: its status.loadBalancer.ingress, else (no "
             "load balancer yet) its spec.externalIPs, else its externalName, else its "
             "clusterIP",
    )
    publish.add_argument(
        "--publish-status-address", type=_addresses, metavar="ADDR[,ADDR]",
        help="write these addresses (IPs or host names) into each live Ingress's "
             "status.loadBalancer",
    )
    parser.add_argument(
        "--lease-namespace", metavar="NS",
        help="namespace of the Lease that picks the one replica writing status and Events, "
             "and of the ConfigMaps that share sign-outs between replicas (default: this "
             "pod's namespace, else $POD_NAMESPACE, else default)",
    )
    parser.add_argument(
        "--lease-name", metavar="NAME",
        help="the Lease's name (default: derived from --controller-name, so controllers of "
             "different classes do not share one)",
    )
    parser.add_argument(
        "--workers", "-w", type=_workers, default=1, metavar="N",
        help="processes that serve (default 1); with more, this process watches and "
             "translates, and sends every worker each new table",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"),
        help="log level of the JSON logs on stderr (default info)",
    )
    parser.set_defaults(func=_run)


def _namespaces(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected namespace names separated by commas")
    return names


def _service(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def _addresses(text: str) -> list[dict[str, str]]:
    try:
        return status_mod.parse_addresses(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value}: expected 1 to {MAX_WORKERS} workers")
    return value


def base_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The routes-file settings the command line gives (they win over the Settings object)."""
    base: dict[str, Any] = {"address": args.address}
    if args.http_redirect_address:
        base["http_redirect_addr"] = args.http_redirect_address
    if args.metrics_address:
        base["metrics_address"] = args.metrics_address
    if args.insecure_server:
        base["insecure_server"] = True
    return base


def _run(args: argparse.Namespace) -> int:
    logs.setup_logging(args.log_level)
    if args.log_level != "debug":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    # kopf warns that it cannot catch signals off the main thread: by design here (our main
    # thread catches them and sets kopf's stop flag).
    logging.getLogger("kopf._core.reactor.running").addFilter(
        lambda record: "running not in the main thread" not in record.getMessage()
    )
    try:
        for place, value in (
            ("--address", args.address),
            ("--http-redirect-address", args.http_redirect_address),
            ("--metrics-address", args.metrics_address),
        ):
            if value:
                server.parse_address(value, place)
    except errors.ConfigError as exc:
        for problem in exc.problems:
            print(f"vallum controller: {problem}", file=sys.stderr)
        return 1
    workers = None
    if args.workers > 1:  # forked before credentials are read and before any thread starts
        workers = controller_workers.Workers(args.workers)
    try:
        from vallum.operator import handlers  # kopf and kubernetes: loaded by this command only

        try:
            client_config = handlers.load_client_config(args.kubeconfig)
        except Exception as exc:  # the client's ConfigException, a missing or unreadable file
            print(f"vallum controller: no Kubernetes credentials: {exc}", file=sys.stderr)
            return 1
        try:
            status = _run_loop(Runner(args, client_config, workers))
        except KeyboardInterrupt:
            return 0
        return status
    finally:
        if workers is not None:
            workers.cleanup()


def _run_loop(runner: Runner) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional speed-up
        return asyncio.run(runner.main())
    status: int = uvloop.run(runner.main())
    return status


class Runner:
    """The proxy side (this thread's loop) and the operator thread, wired together."""

    def __init__(
        self, args: argparse.Namespace, client_config: Any,
        workers: controller_workers.Workers | None = None,
    ) -> None:
        self.args = args
        self.client_config = client_config
        self.server: server.Server | None = None
        self._isolated: tuple[str, config.RouteTable] | None = None  # offered checksum, served
        self.workers = workers  # with --workers N > 1: this process only watches and sends
        # What this process's /metrics shows, before and after the first table.
        self.metrics = workers.metrics if workers is not None else metrics.Metrics()
        self.bridge: tuple[revocation_bridge.Bridge, asyncio.Task[None]] | None = None
        self.waiting_admin: Any = None  # the admin listener until the Server has its own
        self.stop = asyncio.Event()
        self.status = 0
        self.kopf_stop = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        from vallum.operator import handlers

        self.lease_namespace: str = args.lease_namespace or leadership.pod_namespace()
        self.lease_name: str = args.lease_name or leadership.lease_name(args.controller_name)
        # Sign-outs shared with the other replicas (ConfigMaps in the Lease's namespace).
        self.session_state = revocations.ClusterState.connect(
            session_state.LocalState(), handlers.api_client(client_config), self.lease_namespace
        )

    async def main(self) -> int:
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop.set)
        try:
            if self.workers is not None:
                await self._start_workers()
            else:
                await self._start_waiting_admin()
        except OSError as exc:
            print(f"vallum controller: --metrics-address: {exc}", file=sys.stderr)
            return 1
        self.session_state.start()
        thread = threading.Thread(target=self._operator_thread, name="vallum-operator")
        thread.start()
        await self.stop.wait()
        log.info("stopping", extra={"event": "draining"})
        self.kopf_stop.set()
        await asyncio.to_thread(thread.join)
        self.session_state.close()
        if self.waiting_admin is not None:
            await self.waiting_admin.cleanup()
        if self.server is not None:
            await self.server.close()
        if self.workers is not None:
            await self.workers.close()
        if self.bridge is not None:
            self.bridge[1].cancel()
            self.bridge[0].close()
        return self.status

    async def _start_workers(self) -> None:
        """Fork the serving processes (they wait for the first table) and open the admin
        listener on the workers' readiness (controller_workers)."""
        def failed(reason: str) -> None:
            print(f"vallum controller: {reason}", file=sys.stderr)
            self.status = 1
            self.stop.set()

        assert self.workers is not None
        self.workers.on_fatal = failed
        await self.workers.start(self.args.metrics_address)
        # Sign-outs: the workers' shared directory <-> the replicas' ConfigMaps.
        bridge = revocation_bridge.Bridge(
            self.session_state, self.workers.sessions_directory, asyncio.get_running_loop()
        )
        self.session_state.on_revoked = bridge.from_cluster
        self.bridge = bridge, asyncio.create_task(bridge.run(), name="vallum-revocation-bridge")

    async def _start_waiting_admin(self) -> None:
        if not self.args.metrics_address:
            return
        from vallum.proxy import admin, state

        host, port = server.parse_address(self.args.metrics_address, "--metrics-address")
        placeholder = state.TableHolder(routing.build_table(config.Settings()))
        self.waiting_admin = await admin.start_admin(
            host or "0.0.0.0",  # noqa: S104 (the admin address is the operator's choice)
            port, placeholder, self.metrics, ready=lambda: False,
        )

    # -- the proxy's side (this loop) -----------------------------------------------------------

    async def serve(self, table: config.RouteTable) -> bool:
        """Serve ``table``: start the server with the first one, swap in the later ones (or
        send it to every worker)."""
        if self.server is not None:
            published = await self.server.publish(table, isolate_routes=True)
            if published:
                gc.freeze()
            return published
        isolated = await self._isolate(table)
        if isolated is None:
            return False
        table = isolated
        if self.workers is not None:
            sent = await self.workers.publish(table)
            if sent:
                gc.freeze()
            return sent
        if self.waiting_admin is not None:
            await self.waiting_admin.cleanup()
            self.waiting_admin = None
        candidate = server.Server(
            table, gate=identity.build_gate(table.settings, state=self.session_state),
            metrics_=self.metrics,
        )
        if not await server.start_or_report(candidate, "vallum controller"):
            self.status = 1
            self.stop.set()
            return False
        self.server = candidate
        gc.freeze()
        log.info(
            "serving", extra={"event": "serving", "address": table.settings.address,
                              "routes": len(table.settings.routes)},
        )
        return True

    async def _isolate(self, table: config.RouteTable) -> config.RouteTable | None:
        """``table`` with each route whose own upstream TLS material cannot be loaded made
        unavailable (:func:`server.isolate_upstream_tls`): one bad Secret must not keep every
        other change from going live. Done here, once, for the first table and for the workers
        (they then get a table that already says so, the same on all of them); later tables of
        one process go through ``Server.publish(isolate_routes=True)``. None: the table cannot
        be served at all (a bad global ``certificate_authority``), the current one stays."""
        if self._isolated is not None and self._isolated[0] == table.checksum:
            return self._isolated[1]
        try:
            isolated, problems = await asyncio.to_thread(server.isolate_upstream_tls, table)
        except errors.ConfigError as exc:
            log.error(
                "table refused: %s", "; ".join(exc.problems),
                extra={"event": "publish_failed", "problem": "; ".join(exc.problems)},
            )
            return None
        for found in problems:
            log.warning(
                "route unavailable: %s", found.problem,
                extra={"event": "route_isolated", "route": found.source,
                       "problem": found.problem},
            )
        self._isolated = (table.checksum, isolated)
        return isolated

    # -- the operator's side (its own thread and loop) ------------------------------------------

    def _operator_thread(self) -> None:
        try:
            asyncio.run(self._operate())
        except Exception:
            log.exception("the operator stopped", extra={"event": "operator_failed"})
            self.status = 1
        finally:
            if self.loop is not None and not self.loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(self.stop.set)

    async def _operate(self) -> None:
        import kopf  # the operator side only

        from vallum.operator import handlers

        args = self.args
        namespaces = list(args.namespaces) if args.namespaces else None
        api = handlers.api_client(self.client_config)
        store = store_mod.Store(settings_name=args.settings)
        options = translate.Options(controller_name=args.controller_name, base=base_settings(args))
        assert self.loop is not None
        proxy_loop = self.loop

        async def publish(table: config.RouteTable) -> bool:
            future = asyncio.run_coroutine_threadsafe(self.serve(table), proxy_loop)
            return await asyncio.wrap_future(future)

        async def list_objects(kind: str) -> list[dict[str, Any]] | None:
            return await asyncio.to_thread(handlers.list_objects, api, kind, namespaces)

        async def list_keys(kind: str) -> frozenset[snap.ObjectKey] | None:
            return await asyncio.to_thread(handlers.list_keys, api, kind, namespaces)

        async def read_secret(key: snap.ObjectKey) -> Mapping[str, Any] | None:
            return await asyncio.to_thread(handlers.get_secret, api, key)

        lead = leadership.Leadership(
            handlers.api_client(self.client_config),
            namespace=self.lease_namespace, name=self.lease_name,
            identity=leadership.identity(),
            status_addresses=args.publish_status_address, publish_service=args.publish_service,
            prune=self.session_state.prune_expired,
        )
        self.metrics.set_leader(False)  # vallum_controller_leader follows the Lease
        on_change = lead.elector.on_change

        def leader_changed(leader: bool) -> None:
            self.metrics.set_leader(leader)
            if on_change is not None:
                on_change(leader)

        lead.elector.on_change = leader_changed
        loop_controller = controller_mod.Controller(
            store, translate.Translator(options), publish,
            list_objects=list_objects, list_keys=list_keys, read_secret=read_secret,
            report=lead.report,
        )
        if not await self._revocations_synced():
            api.close()
            return
        # Our own LIST first (the first table must be complete), then kopf's watches.
        await loop_controller.load_initial()
        registry = handlers.build_registry(store, self.client_config)
        operator = asyncio.create_task(
            kopf.operator(
                registry=registry,
                settings=handlers.operator_settings(),
                standalone=True,
                clusterwide=namespaces is None,
                namespaces=namespaces or (),
                stop_flag=self.kopf_stop,
            ),
            name="vallum-kopf",
        )
        translating = asyncio.create_task(loop_controller.run(), name="vallum-controller")
        leading = asyncio.create_task(lead.run(), name="vallum-leadership")
        stopped = asyncio.create_task(asyncio.to_thread(self.kopf_stop.wait))
        done, _ = await asyncio.wait(
            {operator, translating, leading, stopped}, return_when=asyncio.FIRST_COMPLETED
        )
        translating.cancel()
        leading.cancel()  # hands the Lease back: another replica takes over at its next read
        self.kopf_stop.set()
        for background in (translating, leading):
            with contextlib.suppress(asyncio.CancelledError):
                await background
        with contextlib.suppress(asyncio.CancelledError):
            await operator
        await stopped
        api.close()
        for task in done:
            if task is not stopped and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"{task.get_name()} failed") from task.exception()
        if stopped not in done:
            raise RuntimeError("the operator stopped by itself")

    async def _revocations_synced(self) -> bool:
        """Wait until the shared sign-outs are read (a revoked session must not pass before),
        saying why meanwhile; False when stopped first."""
        waited = 0
        while not await asyncio.to_thread(self.session_state.synced.wait, 5.0):
            if self.kopf_stop.is_set():
                return False
            waited += 5
            log.warning(
                "not serving yet: cannot read the shared sign-outs (ConfigMaps labelled %s in "
                "namespace %s) for %d s; see the warnings above", revocations.LABEL,
                self.lease_namespace, waited, extra={"event": "revocations_unsynced"},
            )
        return True
