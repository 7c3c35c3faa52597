"""Vallum's pure core: configuration values, route matching, the policy language and claims.

Nothing in here does I/O or imports a web framework or a Kubernetes client; import-linter checks it.
"""
