"""Start and stop everything ``vallum serve`` runs, in one process or in N worker processes.

One worker (:class:`Server`) runs, on one event loop (uvloop when installed):

* the main listener on ``address``: HTTPS with the SNI-selecting context of
  :mod:`vallum.proxy.tls` (client certificates verified but judged by the identity gate in the
  ``downstream_mtls`` policy modes, see :func:`server_context`), or plain HTTP with
  ``insecure_server`` -- the hot path of :mod:`vallum.proxy.http1`;
* the plain-HTTP listener on ``http_redirect_addr`` (:mod:`vallum.proxy.plain_http`): a ``301``
  to the same URL over HTTPS for every request (as Pomerium does), except the ACME HTTP-01
  challenges of ``acme_http01_solver`` routes, which it forwards through the same pipeline;
* the admin listener on ``metrics_address`` (``/healthz``, ``/readyz``, ``/metrics``), in worker 0;
* the :class:`~vallum.proxy.reload.Reloader`: a changed file or ``SIGHUP`` compiles a new table
  beside the old one (with every check of the start, :func:`compile_file`) and swaps it in. A
  swap that changes the certificates builds a new TLS context and hands every new handshake over
  to it from the listener's SNI callback; a change of ``downstream_mtls`` opens a new listening
  socket beside the old one (``SO_REUSEPORT``) *before* the swap and closes the old one in the
  same loop step as the swap, so the table and the CA that checks client certificates always
  agree; if the socket cannot be opened the whole reload is rejected (:meth:`Server._before_swap`).
  Established connections are never touched.

``--workers N`` (:func:`run`) forks N such workers sharing the ports with ``SO_REUSEPORT`` -- the
kernel spreads connections over them, as nginx's workers do. The parent only supervises:
it passes ``SIGHUP``/``SIGTERM`` on, restarts a worker that dies, and gives up (exit 1) when one
dies right at start (a port in use, say). ``SIGTERM``/``SIGINT`` drain: listeners close, idle
connections close, running requests get up to ``DRAIN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vallum.core import config, configfile, errors, routing
from vallum.core.configfile import values
from vallum.proxy import (
    accesslog,
    exchange,
    http1,
    identity,
    metrics,
    pipeline,
    plain_http,
    reload,
    state,
    tls,
    tls_deferred,
    upstream,
    upstream_tls,
)
from vallum.proxy import errors as pages

log = logging.getLogger("vallum.server")

DRAIN_SECONDS = 10.0
EARLY_DEATH_SECONDS = 3.0


def parse_address(value: str, place: str) -> tuple[str | None, int]:
    """``":443"``, ``"0.0.0.0:8443"``, ``"[::1]:443"`` -> (host or None for all, port), read as
    the config loader reads it (:func:`vallum.core.configfile.values.parse_address`)."""
    try:
        return values.parse_address(value)
    except ValueError as exc:
        raise errors.ConfigError([f"{place}: {exc}"]) from None


def server_context(settings: config.Settings) -> ssl.SSLContext:
    """The main listener's TLS context, with client-certificate verification deferred to the
    identity gate in the policy enforcement modes.

    Under ``policy_with_default_deny`` and ``policy`` a presented but invalid client certificate
    (unknown CA, revoked, expired) completes the handshake with ``verified=False`` so the gate
    can answer Pomerium's 495 page or let the route's policy decide; ``reject_connection`` keeps
    failing the handshake. Where deferral is unavailable (see :mod:`vallum.proxy.tls_deferred`)
    invalid certificates fail the handshake in every mode -- closed, never open.
    """
    defer = _defer(settings)
    if defer and not tls_deferred.available():
        log.warning(
            "downstream_mtls: this Python cannot defer client-certificate verification; "
            "an invalid client certificate fails the TLS handshake instead of getting a 495 page",
            extra={"event": "mtls_deferral_unavailable"},
        )
    return tls.server_context(settings, defer_client_verification=defer)


def compile_file(path: str, *, warnings: list[str] | None = None) -> config.RouteTable:
    """The config file at ``path`` as ``vallum serve`` takes it (raises ``ConfigError``).

    The one loader of every command: ``vallum serve`` at start and on each reload and ``vallum
    config check`` all come here, so a file that passes the check is one ``serve`` starts with,
    as far as that can be known without binding sockets: the file loads, the route table
    builds, and :func:`check_table` passes. The loader's warnings (a secret file readable by
    every user) go to ``warnings`` when given, else to the log.
    """
    return _compile(path, warnings)[0]


def _compile(
    path: str, warnings: list[str] | None = None
) -> tuple[config.RouteTable, ssl.SSLContext | None]:
    notes: list[str] = []
    table = routing.build_table(configfile.load(path, warnings=notes))
    if warnings is not None:
        warnings.extend(notes)
    else:
        for note in notes:
            log.warning("config: %s", note, extra={"event": "config_warning"})
    return table, check_table(table)


def check_table(table: config.RouteTable, *, upstream: bool = True) -> ssl.SSLContext | None:
    """What ``vallum serve`` builds from a table before it listens, built once to see that it
    can be: the listener addresses, the listener's TLS context (every certificate with its key,
    the ``downstream_mtls`` CA and CRL) and each route's upstream TLS context (``tls_custom_ca``,
    ``certificate_authority``, ``tls_client_cert`` with its key; ``upstream=False`` skips them,
    for a table :func:`isolate_upstream_tls` has checked). Raises ``ConfigError`` listing
    every problem. Logs nothing (``config check`` prints only problems and warnings).

    Returns the listener's TLS context when certificates are configured (the reload keeps it for
    the swap); None for ``insecure_server`` or the generated self-signed certificate.
    """
    settings = table.settings
    problems: list[str] = []
    for place in ("address", "http_redirect_addr", "metrics_address"):
        value = getattr(settings, place)
        if value is not None:
            try:
                parse_address(value, place)
            except errors.ConfigError as exc:
                problems.extend(exc.problems)
    context = None
    if not settings.insecure_server and (settings.certificates or settings.downstream_mtls):
        probe = settings
        if not settings.certificates:  # the mTLS CA and CRL, under a stand-in certificate
            probe = dataclasses.replace(settings, certificates=(_probe_certificate(),))
        try:
            built = tls.server_context(probe, defer_client_verification=_defer(settings))
        except errors.ConfigError as exc:
            problems.extend(exc.problems)
        else:
            context = built if settings.certificates else None
    checker = _Loads(settings.certificate_authority_pem)
    for route in settings.routes if upstream else ():
        try:
            checker.check(route)
        except errors.ConfigError as exc:
            problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise errors.ConfigError(problems)
    return context


@dataclasses.dataclass(frozen=True, slots=True)
class RouteProblem:
    """A route :func:`isolate_upstream_tls` made unavailable, and why."""

    route_index: int
    """Its position in ``settings.routes`` (the same in the table given and the one returned)."""
    source: str
    """Where it came from (``Route.source``: ``Ingress ns/name spec.rules[0]...``)."""
    problem: str


def isolate_upstream_tls(
    table: config.RouteTable,
) -> tuple[config.RouteTable, tuple[RouteProblem, ...]]:
    """``table`` with every route whose own upstream TLS material cannot be loaded (a bad
    ``tls_custom_ca`` or ``tls_client_cert``/``tls_client_key`` PEM) made ``unavailable`` --
    503 with the reason, its TLS material dropped -- and the list of those routes.

    For ``vallum controller``: there each Ingress brings its own Secrets, and one bad Secret
    must not keep every other change from going live (a file, written by one author, is still
    refused whole by :func:`check_table`). A bad global ``certificate_authority`` concerns every
    route: it raises ``ConfigError`` (the table is rejected, the current one keeps serving).
    Returns ``table`` itself when every route is fine; otherwise a rebuilt table (a new
    checksum and index: that costs what :func:`vallum.core.routing.build_table` costs).
    Builds one context per distinct TLS profile; run it in a worker thread.
    """
    settings = table.settings
    checker = _Loads(settings.certificate_authority_pem)
    if settings.certificate_authority_pem:  # the global CA alone, on a route of no TLS options
        probe = config.Route(from_url="", host=config.Host(""), to=(), source="settings")
        checker.check(probe)
    found: list[RouteProblem] = []
    routes = list(settings.routes)
    for index, route in enumerate(routes):
        try:
            checker.check(route)
        except errors.ConfigError as exc:
            problem = "; ".join(exc.problems)
            found.append(RouteProblem(index, route.source or route.from_url, problem))
            reason = f"its upstream TLS material cannot be loaded ({problem})"
            if route.unavailable is not None:
                reason = f"{route.unavailable}; {reason}"
            routes[index] = dataclasses.replace(
                route, unavailable=reason, tls_custom_ca_pem=None, tls_client_cert_pem=None,
                tls_client_key_pem=None,
            )
    if not found:
        return table, ()
    return routing.build_table(dataclasses.replace(settings, routes=tuple(routes))), tuple(found)


class _Loads:
    """Whether each route's upstream TLS context can be built, remembering the profiles (with
    the global CA) that could: building one costs about 20 ms (the system trust store is read
    each time), and every published table is checked, mostly with the same few profiles, so a
    profile once loaded is not built again to know it loads. Failures are not remembered (the
    message comes from building). Safe from worker threads (dictionary operations)."""

    SIZE = 1024
    _loaded: dict[tuple[object, ...], None] = {}

    def __init__(self, certificate_authority_pem: str | None) -> None:
        self.extra_ca = certificate_authority_pem
        self.builder = upstream_tls.UpstreamTLS(certificate_authority_pem)

    def check(self, route: config.Route) -> None:
        """Raises ``ConfigError`` as :meth:`UpstreamTLS.context_for` does."""
        key = (route.upstream_tls_profile, self.extra_ca)
        if key in self._loaded:
            return
        self.builder.context_for(route)
        if len(self._loaded) >= self.SIZE:
            self._loaded.clear()
        self._loaded[key] = None


@functools.cache
def _probe_certificate() -> config.Certificate:
    return tls.self_signed(["localhost"])


def _defer(settings: config.Settings) -> bool:
    """Whether invalid client certificates are to reach the gate (see :func:`server_context`)."""
    mtls = settings.downstream_mtls
    return mtls is not None and mtls.enforcement != "reject_connection"


class Observer:
    """Writes the access log line and the metrics of each finished exchange."""

    def __init__(self, log_: accesslog.AccessLog, metrics_: metrics.Metrics | None) -> None:
        self.log = log_
        self.metrics = metrics_

    def finished(self, ex: exchange.Exchange) -> None:
        req = ex.req
        duration = time.perf_counter() - ex.started  # (ex.duration, without a call)
        status = ex.status
        if self.log.enabled:
            identity = ex.allow.identity
            self.log.write(  # positional, in AccessLog.write's order (hot path)
                ex.method,
                req.host if req is not None else "",
                req.path if req is not None else "",
                status,
                ex.sent,
                duration,
                ex.route_name,
                ex.request_id,
                req.client_ip if req is not None else ex.proto.peer_ip,
                ex.upstream_url,
                identity.user if identity is not None else None,
            )
        if self.metrics is not None:
            self.metrics.observe(ex.route_name, ex.method, status, duration)


class Server:
    """One worker's listeners, pools and reloader."""

    def __init__(
        self,
        table: config.RouteTable,
        *,
        config_path: str | None = None,
        gate: pipeline.Gate | None = None,
        worker: int = 0,
        access_log: accesslog.AccessLog | None = None,
        metrics_: metrics.Metrics | None = None,
        admin: bool = True,
    ) -> None:
        self.holder = state.TableHolder(table)
        self.config_path = config_path
        self.worker = worker
        self.metrics = metrics_ if metrics_ is not None else metrics.Metrics()
        self.metrics.set_table(self.holder.generation, len(table.settings.routes))
        self.upstream_tls = upstream_tls.UpstreamTLS(table.settings.certificate_authority_pem)
        self.pool = upstream.Pool(self.upstream_tls)
        settings = table.settings
        self.access_log = access_log if access_log is not None else accesslog.AccessLog()
        self.ctx = http1.Context(
            self.holder,
            gate if gate is not None else identity.build_gate(settings),
            self.pool,
            scheme="http" if settings.insecure_server else "https",
            observer=Observer(self.access_log, self.metrics),
        )
        self.want_admin = admin
        self.main: asyncio.Server | None = None
        self.redirect: asyncio.Server | None = None
        self.plain: http1.Context | None = None  # the plain-HTTP listener's connections
        self.admin: Any = None
        self.reloader: reload.Reloader | None = None
        self.ready = False
        self._tls_key = _tls_key(settings)
        self._front: ssl.SSLContext | None = None  # the context the listener was made with
        self._prepared: tuple[tuple[object, ...], ssl.SSLContext] | None = None
        self._pending: tuple[tuple[object, ...], ssl.SSLContext, asyncio.Server | None] | None = (
            None  # made by _before_swap for _swapped: the new context and, for mTLS, listener
        )
        self._address = parse_address(settings.address, "address")
        self.route_problems: tuple[RouteProblem, ...] = ()
        """The routes the last ``publish(..., isolate_routes=True)`` made unavailable."""
        self._isolated: tuple[str, config.RouteTable] | None = None  # offered checksum, served

    @property
    def port(self) -> int:
        assert self.main is not None
        return int(self.main.sockets[0].getsockname()[1])

    async def start(self) -> None:
        settings = self.holder.current.settings
        prepare = getattr(self.ctx.gate, "context_for", None)
        if prepare is not None:  # the identity gate logs what sign-in lacks now, not later
            prepare(self.holder.current)
        context = None if settings.insecure_server else server_context(settings)
        self._front = context
        self.main = await self._listen(self._address, context)
        if settings.http_redirect_addr and not settings.insecure_server:
            address = parse_address(settings.http_redirect_addr, "http_redirect_addr")
            loop = asyncio.get_running_loop()
            self.plain = http1.Context(
                self.holder,
                plain_http.PlainHTTPGate(self.ctx.gate, self.port),
                self.pool,
                scheme="http",
                observer=self.ctx.observer,
            )
            self.redirect = _listening(
                await loop.create_server(
                    self.plain.protocol,
                    address[0],
                    address[1],
                    reuse_port=True,
                    backlog=1024,
                ),
                address,
            )
        if settings.metrics_address and self.want_admin:
            await self._start_admin(settings.metrics_address)
        if self.config_path is not None:
            self.reloader = reload.Reloader(
                self.config_path,
                self.holder,
                self.compile,
                on_swap=[self.upstream_tls.retain, self._swapped],
                before_swap=self._before_swap,
                on_failure=[self.metrics.reload_failed],
            )
            self.reloader.start()
        self.ready = True

    def compile(self, path: str) -> config.RouteTable:
        """The reloader's compile step: :func:`compile_file`'s table, and its TLS context when
        the certificates or ``downstream_mtls`` changed, so a broken certificate rejects the
        reload up front (the old table keeps serving, ``/readyz`` shows the error) instead of
        being swapped in and then failing. Runs in a worker thread; the context is kept for
        :meth:`_before_swap`."""
        table, checked = _compile(path)
        settings = table.settings
        key = _tls_key(settings)
        if key != self._tls_key and not settings.insecure_server:
            context = checked if checked is not None else server_context(settings)
            self._prepared = (key, context)
        return table

    async def publish(self, table: config.RouteTable, *, isolate_routes: bool = False) -> bool:
        """Serve ``table``, built outside this server (``vallum controller`` translates
        Kubernetes objects into it), through a file reload's steps: :func:`check_table` and the
        TLS context in a worker thread, the ``before_swap`` step, the swap and its callbacks. A
        table that fails them is rejected like a bad file (``holder.reject``, the failure
        metric, ``/readyz``'s ``last_error``) and the current one keeps serving. Returns whether
        ``table`` is what is served now. Callers publish one table at a time.

        With ``isolate_routes`` a route whose own upstream TLS material cannot be loaded does
        not reject the table: :func:`isolate_upstream_tls` makes it unavailable (503 with the
        reason), the rest is served, and :attr:`route_problems` lists those routes (logged
        once per table)."""
        if isolate_routes and self._isolated is not None and self._isolated[0] == table.checksum:
            table = self._isolated[1]  # offered again: isolated the same way as last time
        elif isolate_routes:
            offered = table
            try:
                table, problems = await asyncio.to_thread(isolate_upstream_tls, offered)
            except errors.ConfigError as exc:
                return self._rejected(exc.problems)
            self._isolated = (offered.checksum, table)
            self.route_problems = problems
            for found in problems:
                log.warning(
                    "route unavailable: %s", found.problem,
                    extra={"event": "route_isolated", "route": found.source,
                           "problem": found.problem},
                )
        else:
            self.route_problems = ()
        if table.checksum == self.holder.current.checksum:
            self.holder.last_error = None
            return True
        key = _tls_key(table.settings)

        def check() -> None:
            checked = check_table(table, upstream=not isolate_routes)
            if key != self._tls_key and not table.settings.insecure_server:
                context = checked if checked is not None else server_context(table.settings)
                self._prepared = (key, context)

        try:
            await asyncio.to_thread(check)
            await self._before_swap(table)
        except (errors.ConfigError, OSError) as exc:
            return self._rejected(
                exc.problems if isinstance(exc, errors.ConfigError) else [str(exc)]
            )
        self.holder.swap(table)
        self.upstream_tls.retain(table)
        self._swapped(table)
        return True

    def _rejected(self, problems: Sequence[str]) -> bool:
        """:meth:`publish`'s answer to a table it refuses (the current one keeps serving)."""
        message = "\n".join(problems)
        log.error(
            "table rejected, keeping the current one: %s", message,
            extra={"event": "publish_failed", "problem": message},
        )
        self.holder.reject(message)
        self.metrics.reload_failed(message)
        return False

    def _context_for(self, settings: config.Settings) -> ssl.SSLContext:
        """The context :meth:`compile` prepared for ``settings``, else a fresh one."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == _tls_key(settings):
            return prepared[1]
        return server_context(settings)

    async def _before_swap(self, table: config.RouteTable) -> None:
        """Everything a new table needs from the listeners that can fail, done before the swap
        (raising rejects the reload, and the old table, certificates and listener stay).

        New certificates: the TLS context (built by :meth:`compile`). A new ``downstream_mtls``:
        a new listening socket beside the old one, with the new CA, CRL and enforcement -- a
        connection's verification settings come from the context its listener was made with,
        so the old listener must not accept one more connection once the new table is served.
        Switching ``insecure_server`` changes what the listener speaks; that needs a restart.
        """
        self._pending = None
        settings = table.settings
        key = _tls_key(settings)
        if key == self._tls_key:
            return
        if settings.insecure_server != self._tls_key[2]:
            raise errors.ConfigError(
                [
                    "insecure_server: changed from "
                    f"{str(self._tls_key[2]).lower()} to {str(settings.insecure_server).lower()}; "
                    "restart vallum to switch address between HTTP and HTTPS"
                ]
            )
        if settings.insecure_server:
            return
        context = self._context_for(settings)
        listener = None
        if key[1] != self._tls_key[1] or self._front is None:
            try:
                listener = await self._listen(self._bound_address(), context)
            except OSError as exc:
                log.error(
                    "downstream_mtls changed but the new listener failed; keeping the current "
                    "configuration: %s",
                    exc,
                    extra={"event": "tls_rebind_failed", "error": str(exc)},
                )
                raise errors.ConfigError(
                    [
                        f"downstream_mtls: changed, but listening on {self._bound_address_text()} "
                        f"with the new client CA failed ({exc}); the reload is rejected, the "
                        "current table and listener keep serving"
                    ]
                ) from None
        self._pending = (key, context, listener)

    def _bound_address(self) -> tuple[str | None, int]:
        """The configured address, with the port the listener got when it asked for port 0."""
        host, port = self._address
        if port == 0 and self.main is not None and self.main.sockets:
            port = int(self.main.sockets[0].getsockname()[1])
        return host, port

    def _bound_address_text(self) -> str:
        host, port = self._bound_address()
        return f"[{host}]:{port}" if host and ":" in host else f"{host or ''}:{port}"

    async def _start_admin(self, address_text: str) -> None:
        from vallum.proxy import admin  # the admin listener is aiohttp; load it only when used

        host, port = parse_address(address_text, "metrics_address")
        self.admin = await admin.start_admin(
            host or "0.0.0.0",  # noqa: S104 (the admin address is the operator's choice)
            port,
            self.holder,
            self.metrics,
            ready=lambda: self.ready,
        )

    async def _listen(
        self, address: tuple[str | None, int], context: ssl.SSLContext | None
    ) -> asyncio.Server:
        """A listener on ``address``; raises ``OSError`` when no socket could be made.

        asyncio's ``create_server`` skips an address whose ``socket()`` fails (taking it for an
        unsupported family), so out of file descriptors it returns a server listening nowhere;
        that is an error here, with the reason ``socket()`` gives."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            self.ctx.protocol,
            address[0],
            address[1],
            ssl=context,
            reuse_port=True,
            backlog=4096,
            ssl_handshake_timeout=10.0 if context is not None else None,
        )
        return _listening(listener, address)

    def _swapped(self, table: config.RouteTable) -> None:
        """Right after the swap, in the same loop step: serve what :meth:`_before_swap` made
        (close the replaced listener, or hand new handshakes to the new certificates)."""
        self.metrics.set_table(self.holder.generation, len(table.settings.routes))
        settings = table.settings
        if parse_address(settings.address, "address") != self._address:
            log.warning("address changed: restart vallum to listen on the new address")
        pending, self._pending = self._pending, None
        key = _tls_key(settings)
        if key == self._tls_key or settings.insecure_server:
            self._tls_key = key
            return
        if pending is None or pending[0] != key:  # pragma: no cover - _before_swap always ran
            log.error("certificates changed without being prepared: restart vallum")
            return
        self._tls_key = key
        _, context, listener = pending
        if listener is not None:
            old, self.main, self._front = self.main, listener, context
            if old is not None:
                old.close()
        else:
            assert self._front is not None
            _hand_over(self._front, context)
        log.info("certificates reloaded", extra={"event": "tls_reloaded"})

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop listening, then give running requests up to ``drain`` seconds."""
        self.ready = False
        if self.reloader is not None:
            await self.reloader.stop()
        for server in (self.main, self.redirect):
            if server is not None:
                server.close()
        contexts = [self.ctx] if self.plain is None else [self.ctx, self.plain]
        for ctx in contexts:
            ctx.close()
        deadline = time.monotonic() + drain
        while any(ctx.connections for ctx in contexts) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for ctx in contexts:
                ctx.close()
        for ctx in contexts:
            for conn in list(ctx.connections):
                conn.abort()
        self.pool.close()
        if self.admin is not None:
            await self.admin.cleanup()
        closer = getattr(self.ctx.gate, "close", None)  # a gate may hold clients (OIDC, JWKS)
        if closer is not None:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        # Access log lines of the last loop round and the metrics tallied since the last flush
        # may still be pending; a worker ends with os._exit, which would drop them.
        self.metrics.flush()
        try:
            self.access_log.flush()
        except (OSError, ValueError) as exc:
            log.error("access log: final flush failed: %s", exc)


def _listening(listener: asyncio.Server, address: tuple[str | None, int]) -> asyncio.Server:
    """``listener``, or ``OSError`` when asyncio made it with no socket (see ``_listen``)."""
    if not listener.sockets:
        listener.close()
        with socket.socket():  # raises the reason (EMFILE, ENFILE, ...) if it still holds
            pass
        raise OSError(f"no listening socket could be made on {address[0] or ''}:{address[1]}")
    return listener


def _tls_key(settings: config.Settings) -> tuple[object, ...]:
    return (settings.certificates, settings.downstream_mtls, settings.insecure_server)


def _hand_over(front: ssl.SSLContext, fresh: ssl.SSLContext) -> None:
    """Serve ``fresh``'s certificates on a listener created with ``front``.

    The SNI callback switches each new handshake to ``fresh`` (and runs ``fresh``'s own SNI
    selection), so rotated certificates are served without closing the listening socket -- a
    closed ``SO_REUSEPORT`` socket resets the connections still in its accept queue. Client
    verification settings stay ``front``'s: a change to ``downstream_mtls`` rebinds instead.
    """
    selector = fresh.sni_callback

    def on_sni(ssl_object: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        ssl_object.context = fresh
        if selector is not None:
            return selector(ssl_object, name, fresh)  # type: ignore[arg-type]
        return None

    front.sni_callback = on_sni


# -- running ------------------------------------------------------------------------------------


def _run_loop(main: Callable[[], Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional speed-up
        return asyncio.run(main())
    return uvloop.run(main())


async def start_or_report(server: Server, prog: str) -> bool:
    """Start ``server``; when its listeners cannot start (a config problem, an address in use),
    print each reason as ``prog: reason`` on stderr, close it and answer ``False``."""
    try:
        await server.start()
    except (errors.ConfigError, OSError) as exc:
        problems = exc.problems if isinstance(exc, errors.ConfigError) else (str(exc),)
        for problem in problems:
            print(f"{prog}: {problem}", file=sys.stderr)
        await server.close(drain=0)
        return False
    return True


async def _serve(
    config_path: str, table: config.RouteTable, worker: int, gate: pipeline.Gate
) -> int:
    server = Server(table, config_path=config_path, gate=gate, worker=worker, admin=worker == 0)
    if not await start_or_report(server, "vallum serve"):
        return 1
    log.info(
        "serving",
        extra={"event": "serving", "address": table.settings.address, "worker": worker,
               "pid": os.getpid()},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining", extra={"event": "draining", "worker": worker})
    await server.close()
    return 0


GateFactory = Callable[[config.Settings], pipeline.Gate]
"""Builds each worker's gate from the first configuration (e.g. ``identity.build_gate``)."""


def run(
    config_path: str, *, workers: int = 1, gate_factory: GateFactory = identity.build_gate
) -> int:
    """Serve ``config_path`` until SIGTERM/SIGINT; returns the exit status.

    A config that does not load is a ``ConfigError`` raised before anything starts. Without a
    ``gate_factory`` each worker gets the identity gate (:func:`vallum.proxy.identity.build_gate`):
    public routes, sign-in, bearer tokens and downstream mTLS, failing closed where a part of
    the configuration is missing.
    """
    table = compile_file(config_path)
    if workers <= 1:
        status: int = _run_loop(
            lambda: _serve(config_path, table, 0, gate_factory(table.settings))
        )
        return status
    if not table.settings.insecure_server:
        server_context(table.settings)  # certificate problems: fail before forking
    directory = metrics.enable_multiprocess()
    # Sign-outs and refreshes are shared by the workers through this directory (the identity
    # gate of each worker finds it in the environment: vallum.proxy.session_state).
    from vallum.proxy import session_state

    shared = session_state.enable_shared_directory()
    try:
        return _supervise(config_path, table, workers, gate_factory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        session_state.disable_shared_directory(shared)


def _supervise(
    config_path: str,
    table: config.RouteTable,
    workers: int,
    gate_factory: GateFactory,
) -> int:
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started)

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reloader takes it
            pages.reset_after_fork()
            code = 1
            try:
                code = _run_loop(
                    lambda: _serve(config_path, table, index, gate_factory(table.settings))
                )
            finally:
                os._exit(code)
        children[pid] = (index, time.monotonic())

    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for index in range(workers):
        spawn(index)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait
            continue
        entry = children.pop(pid, None)
        metrics.worker_exited(pid)
        if stopping or entry is None:
            continue
        index, started = entry
        exit_code = os.waitstatus_to_exitcode(code)
        if time.monotonic() - started < EARLY_DEATH_SECONDS:
            print(f"vallum serve: worker {index} exited at start ({exit_code})", file=sys.stderr)
            status = 1
            stopping = True
            forward(signal.SIGTERM, None)
            continue
        log.error("worker %s exited (%s): restarting", index, exit_code)
        spawn(index)
    return status
