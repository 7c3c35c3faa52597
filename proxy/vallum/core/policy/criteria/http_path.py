"""``http_path``: a string matcher on the request path, without the query string.

The proxy hands the policy the normalised path (the one it matched and forwards). Unlike
Pomerium, which reads the request through a wildcard (so ``contains`` could match the host), this
looks at the path only.
"""

from __future__ import annotations

from vallum.core.policy.criteria import base, string_value
from vallum.core.policy.subject import Subject

NAME = "http_path"
ABOUT_USER = False
SUB_PATH = False


def _read(subject: Subject) -> str | None:
    path = subject.request.path
    return path if type(path) is str else None


def build(spec: base.Spec) -> base.Leaf:
    return string_value.build(
        spec, _read, about_user=False, exact_noun=None, other_noun="a path"
    )
