"""``http_method``: a string matcher on the request method (exact: ``GET``, not ``get``).

Unlike Pomerium, which reads the request through a wildcard and can match other fields, this
looks at the method only.
"""

from __future__ import annotations

from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "http_method"
ABOUT_USER = False
SUB_PATH = False


def build(spec: base.Spec) -> base.Leaf:
    m = matchers.string_matcher(spec.data, spec.path)
    match = m.test

    def test(subject: Subject) -> int:
        method = subject.request.method
        return logic.TRUE if type(method) is str and match(method) else logic.FALSE

    return base.Leaf(
        spec.key,
        test,
        f"http_method {m.description}",
        f"an HTTP method that {m.description}",
        base.code_for(NAME),
        m.normalized,
        spec.path,
    )
