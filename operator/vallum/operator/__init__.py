"""Vallum's Kubernetes operator (kopf): compiles cluster objects into the proxy's route table.

Not built yet; see the issues. It will import ``vallum.core`` only, never ``vallum.proxy``.
"""
