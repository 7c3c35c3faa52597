"""The policy language: Pomerium-compatible rules, compiled once, evaluated with reasons.

Public interface::

    p = policy.compile_policy(data)             # YAML/JSON value; raises PolicyError(path, msg)
    p = policy.compile_route_policy(route)      # route.policy + legacy options; never raises
    d = policy.evaluate(p, request, identity)   # Decision(allowed, reasons, needs_login)

The language itself is specified in :mod:`vallum.core.policy.parser`; each criterion in its
module under :mod:`vallum.core.policy.criteria`; user documentation in ``docs/policy.md``.
"""

from __future__ import annotations

from vallum.core.policy.compiler import CompiledPolicy, compile_policy
from vallum.core.policy.decision import Decision, Reason
from vallum.core.policy.evaluator import evaluate
from vallum.core.policy.legacy import compile_route_policy

__all__ = [
    "CompiledPolicy",
    "Decision",
    "Reason",
    "compile_policy",
    "compile_route_policy",
    "evaluate",
]
