"""``cors_preflight``: true for a CORS pre-flight request; the value is ignored.

A pre-flight is method ``OPTIONS`` with non-empty ``Access-Control-Request-Method`` and
``Origin`` headers (``RequestInfo.headers`` keys are lower-case).
"""

from __future__ import annotations

from vallum.core.policy import logic
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "cors_preflight"
ABOUT_USER = False
SUB_PATH = False


def _test(subject: Subject) -> int:
    request = subject.request
    if request.method != "OPTIONS":
        return logic.FALSE
    headers = request.headers
    if headers.get("access-control-request-method") and headers.get("origin"):
        return logic.TRUE
    return logic.FALSE


def build(spec: base.Spec) -> base.Leaf:
    return base.Leaf(
        spec.key,
        _test,
        "cors_preflight",
        "a CORS pre-flight request (OPTIONS with Origin and Access-Control-Request-Method)",
        "non-cors-request",
        True,
        spec.path,
    )
