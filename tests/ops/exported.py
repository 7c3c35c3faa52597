"""The metric names and label names Vallum exports, read from a real ``/metrics`` exposition.

:func:`exported` renders a :class:`vallum.proxy.metrics.Metrics` (what the admin listener's
``/metrics`` answers) after giving every conditional family something to show: a request, a
table with a certificate, readiness and the controller's leadership (exported only under
``vallum controller``). A name the dashboard or an alert uses must be in it.
"""

from __future__ import annotations

import functools

from prometheus_client.parser import text_string_to_metric_families

from tests.support.certs import TestCA
from vallum.core import config, routing
from vallum.proxy import metrics

TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container",
                           "endpoint"})
"""Labels Prometheus (and prometheus-operator's ServiceMonitor) add to every scraped series."""


@functools.cache
def exported() -> dict[str, frozenset[str]]:
    """Every sample name of the exposition (``_total``, ``_bucket``... included) with its
    label names."""
    ca = TestCA.create("Exported CA")
    leaf = ca.issue("app.test")
    table = routing.build_table(config.Settings(
        certificates=(config.Certificate(leaf.cert_pem, leaf.key_pem),),
    ))
    collected = metrics.Metrics()
    collected.observe("app", "GET", 200, 0.01)
    collected.set_table(1, 0)
    collected.set_certificates(table)
    collected.set_ready(True)
    collected.set_leader(True)
    text = collected.render()[0].decode()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names.setdefault(family.name, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in names.items()}
