"""``http_path``: a string matcher on the request path, without the query string.

The proxy hands the policy the normalised path (the one it matched and forwards). Unlike
Pomerium, which reads the request through a wildcard (so ``contains`` could match the host), this
looks at the path only.
"""

from __future__ import annotations

from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "http_path"
ABOUT_USER = False
SUB_PATH = False


def build(spec: base.Spec) -> base.Leaf:
    m = matchers.string_matcher(spec.data, spec.path)
    match = m.test

    def test(subject: Subject) -> int:
        path = subject.request.path
        return logic.TRUE if type(path) is str and match(path) else logic.FALSE

    return base.Leaf(
        spec.key,
        test,
        f"http_path {m.description}",
        f"a path that {m.description}",
        base.code_for(NAME),
        m.normalized,
        spec.path,
    )
