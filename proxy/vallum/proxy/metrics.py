"""Prometheus metrics for the data plane, cheap on the hot path and correct with ``--workers N``.

* ``vallum_requests_total{route,method,status}`` and ``vallum_request_duration_seconds{route}``
  — one :meth:`Metrics.observe` per request. It only adds to plain per-label tallies (a dict
  lookup, a ``bisect`` into :data:`BUCKETS`, three additions: no lock, no call into
  prometheus_client); :meth:`Metrics.flush` adds the tallies to prometheus_client's own values
  (each ``inc`` takes a lock, a mmap write in multiprocess mode) once per label combination.
  A flush runs a second after the first request it carries (a loop timer), before every scrape
  of this process (:meth:`render`), when the server stops, and right away when no event loop
  runs. So a scrape answered by *another* worker sees this one's requests up to a second late.
  Methods outside the standard set are counted as ``OTHER`` so a client cannot grow the label
  space.
* ``vallum_route_table_generation``, ``vallum_route_table_routes``,
  ``vallum_config_last_reload_success`` and ``vallum_config_reload_failures_total`` — what live
  reload did.
* ``vallum_certificate_expiration_timestamp_seconds{kind,name,serial}`` — the ``notAfter`` of
  every certificate in the table being served, as a Unix time (the convention of cert-manager's
  ``certmanager_certificate_expiration_timestamp_seconds`` and the x509 exporters: the value
  only changes when the certificate does, and ``- time()`` gives the time left). ``kind`` is
  ``server`` (``certificates``, the leaf), ``upstream_client`` (a route's
  ``tls_client_cert``, the leaf) or ``ca`` (every certificate of ``certificate_authority``,
  ``downstream_mtls.ca`` and a route's ``tls_custom_ca``); ``name`` is the subject's common
  name, else its first SAN; ``serial`` the serial number in hex. One series per distinct
  certificate of the current table, however many routes share it; a certificate that leaves
  the table leaves the exposition. Computed by the process that answers ``/metrics`` from the
  table it serves (:meth:`Metrics.set_certificates`, once per table, with
  :mod:`vallum.proxy.certificate_expiry`), so it is exact in every mode, workers or not.
* ``vallum_denials_total{reason}`` — requests the identity gate refused itself: ``policy``
  (403), ``unauthenticated`` (401: an API client with no session, or a bearer token refused),
  ``sign_in_required`` (a browser sent to sign in) and ``client_certificate`` (495); and
  ``vallum_sign_ins_total{result}`` — sign-in callbacks that ended in a session (``success``)
  or an error page (``failure``). The gate calls :func:`denied` and :func:`signed_in`, which
  only add to a per-process tally (the gate has no ``Metrics``); :meth:`Metrics.flush` moves it
  into the counters with the request tallies. Every label value exists from the start at 0.
* ``vallum_ready`` (1/0, what ``/readyz`` says) and, under ``vallum controller`` only,
  ``vallum_controller_leader`` (1 while this replica holds the Lease): state of the process
  that answers ``/metrics``, set by it (:meth:`Metrics.set_ready`, :meth:`Metrics.set_leader`).

Several worker processes share one port, and a scrape reaches only one of them; prometheus_client's
multiprocess mode makes every worker write its values to files in ``PROMETHEUS_MULTIPROC_DIR``
and a scrape sums them. The server calls :func:`enable_multiprocess` *before* forking workers;
:meth:`Metrics.render` serves either mode.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import tempfile
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vallum.core import config
from vallum.proxy import certificate_expiry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# From 1 ms (a cached public route on loopback) to a minute (long uploads, slow upstreams).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0)

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)


def enable_multiprocess(directory: str | None = None) -> str:
    """Switch this process (and the workers it forks) to multiprocess metrics.

    Creates a private temporary directory unless ``directory`` is given, exports it as
    ``PROMETHEUS_MULTIPROC_DIR`` and makes metrics created from now on write there. Returns the
    directory; the caller removes it at exit.
    """
    path = directory or tempfile.mkdtemp(prefix="vallum-metrics-")
    os.environ[MULTIPROC_ENV] = path
    _use_multiprocess_values()
    return path


def _use_multiprocess_values() -> None:
    # prometheus_client picks its value class when first imported; re-pick it if the directory
    # was exported after that import.
    if getattr(values.ValueClass, "__name__", "") != "MmapedValue":
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def worker_exited(pid: int) -> None:
    """Forget a dead worker's live gauges (call from the parent when a worker exits)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


DENIAL_REASONS = ("policy", "unauthenticated", "sign_in_required", "client_certificate")
SIGN_IN_RESULTS = ("success", "failure")
_denials: dict[str, int] = {}
_sign_ins: dict[str, int] = {}


def denied(reason: str) -> None:
    """Count a request the gate refused, by one of :data:`DENIAL_REASONS`. From the serving
    loop's thread (as :meth:`Metrics.flush` runs); cheap: one dict update."""
    _denials[reason] = _denials.get(reason, 0) + 1


def signed_in(success: bool) -> None:
    """Count a finished sign-in callback."""
    result = "success" if success else "failure"
    _sign_ins[result] = _sign_ins.get(result, 0) + 1


def _drain(tally: dict[str, int]) -> list[tuple[str, int]]:
    items = list(tally.items())
    for key, count in items:  # subtract what was read: a concurrent add is kept for next time
        tally[key] -= count
    return [(key, count) for key, count in items if count]


_Inc = Callable[[float], None]
_Incs = tuple[_Inc, _Inc, tuple[_Inc, ...]]
FLUSH_SECONDS = 1.0
_BUCKET_SLOTS = len(BUCKETS) + 1  # one per bound, then +Inf


class _Tally:
    """Requests of one (route, method, status) since the last flush."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * _BUCKET_SLOTS


def _value_incs(counter: Counter, histogram: Histogram) -> _Incs | None:
    """The ``inc`` methods of one counter child's value and one histogram child's sum and
    buckets (``_value``, ``_sum``, ``_buckets``: prometheus_client's value objects, the same ones
    its ``inc``/``observe`` update); ``None`` if a future release names them differently."""
    value = getattr(counter, "_value", None)
    total = getattr(histogram, "_sum", None)
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    if (
        value is not None
        and total is not None
        and buckets is not None
        and bounds == [*BUCKETS, float("inf")]
    ):
        return value.inc, total.inc, tuple(b.inc for b in buckets)
    return None


class _AdminCollector(Collector):
    """The series of the process answering ``/metrics`` (see the module doc), made at scrape."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def collect(self) -> Iterable[GaugeMetricFamily]:
        owner = self.owner
        expiry = GaugeMetricFamily(
            "vallum_certificate_expiration_timestamp_seconds",
            "notAfter of each certificate in the table being served, as a Unix time.",
            labels=("kind", "name", "serial"),
        )
        for entry in owner.certificates.series:
            expiry.add_metric((entry.kind, entry.name, entry.serial), entry.not_after)
        yield expiry
        if owner.ready is not None:
            yield GaugeMetricFamily(
                "vallum_ready", "1 when /readyz answers ready, else 0.", value=owner.ready
            )
        if owner.leader is not None:
            yield GaugeMetricFamily(
                "vallum_controller_leader",
                "1 while this vallum controller replica holds the Lease (writes status and "
                "events), else 0.",
                value=owner.leader,
            )


class Metrics:
    """The data plane's metrics. One instance per process."""

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir:
            _use_multiprocess_values()
        self.registry = CollectorRegistry()
        if not self.multiprocess_dir:
            ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "vallum_requests",
            "Requests served, by route, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "vallum_request_duration_seconds",
            "Time from request received to response finished, by route.",
            ("route",),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.generation = Gauge(
            "vallum_route_table_generation",
            "Generation of the route table being served (1 = the first one loaded).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.routes = Gauge(
            "vallum_route_table_routes",
            "Routes in the table being served.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.last_reload_success = Gauge(
            "vallum_config_last_reload_success",
            "1 if the last reload was accepted, 0 if it was rejected (old table kept).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.reload_failures = Counter(
            "vallum_config_reload_failures",
            "Reloads rejected because the configuration did not compile.",
            registry=self.registry,
        )
        self.last_reload_success.set(1)
        self.denials = Counter(
            "vallum_denials",
            "Requests refused by the identity gate itself, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.sign_ins = Counter(
            "vallum_sign_ins",
            "Sign-in callbacks, by result (success: a session was made).",
            ("result",),
            registry=self.registry,
        )
        for reason in DENIAL_REASONS:
            self.denials.labels(reason)
        for result in SIGN_IN_RESULTS:
            self.sign_ins.labels(result)
        self.certificates = certificate_expiry.CertificateExpiries()
        self.ready: int | None = None
        self.leader: int | None = None
        self._admin = _AdminCollector(self)
        self.registry.register(self._admin)
        self._children: dict[tuple[str, str, int], _Incs] = {}
        self._tallies: dict[tuple[str, str, int], _Tally] = {}
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its duration. Hot path: keep it this small."""
        if method not in METHODS:
            method = "OTHER"
        key = (route, method, status)
        tallies = self._tallies
        tally = tallies.get(key)
        if tally is None:
            if key not in self._children and self._child(route, method, status) is None:
                # A prometheus_client whose value objects are unknown: its public methods.
                self.requests.labels(route, method, str(status)).inc()
                self.duration.labels(route).observe(seconds)
                return
            if not tallies:
                self._schedule_flush()
            tally = tallies[key] = _Tally()
        tally.count += 1
        tally.total += seconds
        # Histogram buckets hold "<= bound" counts, non-cumulative until exposition: the first
        # bound >= seconds (bisect_left), past the last one the +Inf bucket.
        tally.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        if self._timer is None:  # no event loop: nothing would flush later
            self.flush()

    def _schedule_flush(self) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Add the tallies since the last flush to prometheus_client's values."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tallies, self._tallies = self._tallies, {}
        for key, tally in tallies.items():
            incs = self._children[key]  # made by observe before the first tally of its key
            incs[0](float(tally.count))
            incs[1](tally.total)
            for bucket, count in zip(incs[2], tally.buckets, strict=True):
                if count:
                    bucket(float(count))
        if _denials:
            for reason, count in _drain(_denials):
                self.denials.labels(reason).inc(count)
        if _sign_ins:
            for result, count in _drain(_sign_ins):
                self.sign_ins.labels(result).inc(count)

    def _child(self, route: str, method: str, status: int) -> _Incs | None:
        counter = self.requests.labels(route, method, str(status))
        histogram = self.duration.labels(route)
        incs = _value_incs(counter, histogram)
        if incs is not None:
            self._children[(route, method, status)] = incs
        return incs

    def set_table(self, generation: int, routes: int) -> None:
        """Record that the table ``generation`` with ``routes`` routes is being served."""
        self.generation.set(generation)
        self.routes.set(routes)
        self.last_reload_success.set(1)

    def reload_failed(self, _message: str = "") -> None:
        """Record a rejected reload (usable as a ``Reloader`` ``on_failure`` callback)."""
        self.reload_failures.inc()
        self.last_reload_success.set(0)

    def set_certificates(self, table: config.RouteTable) -> None:
        """Expose the certificates of ``table`` (the one served); cheap when it is unchanged."""
        self.certificates.update(table)

    def set_ready(self, ready: bool) -> None:
        """Record what ``/readyz`` answers."""
        self.ready = int(ready)

    def set_leader(self, leader: bool) -> None:
        """Record whether this controller replica holds the Lease (from then on exported);
        callable from any thread."""
        self.leader = int(leader)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type; sums every worker in multiprocess mode."""
        self.flush()
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            registry.register(self._admin)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
