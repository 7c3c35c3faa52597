"""Benchmarks of ``vallum controller`` against a real API server (issue 12's acceptance).

``python -m bench.controller`` (``bench/run-controller``) measures apply -> live latency, cold
start with memory, a change stream against an unchanged route, and throughput beside
``vallum serve`` with the same table. Modules: :mod:`.objects` (the cluster objects, pure),
:mod:`.stats` (percentiles and target lines, pure), :mod:`.cluster` (control plane and bulk
writes), :mod:`.processes` (upstream and controller processes), :mod:`.probe` (HTTP requests),
:mod:`.benchmarks` (the four measurements), :mod:`.main` (options).
"""
