"""``http_method``: a string matcher on the request method (exact: ``GET``, not ``get``).

Unlike Pomerium, which reads the request through a wildcard and can match other fields, this
looks at the method only.
"""

from __future__ import annotations

from vallum.core.policy.criteria import base, string_value
from vallum.core.policy.subject import Subject

NAME = "http_method"
ABOUT_USER = False
SUB_PATH = False


def _read(subject: Subject) -> str | None:
    method = subject.request.method
    return method if type(method) is str else None


def build(spec: base.Spec) -> base.Leaf:
    return string_value.build(
        spec, _read, about_user=False, exact_noun=None, other_noun="an HTTP method"
    )
