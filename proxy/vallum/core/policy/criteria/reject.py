"""``reject``: always false. The value is ignored (``reject: false`` still rejects)."""

from __future__ import annotations

from vallum.core.policy import logic
from vallum.core.policy.criteria import base

NAME = "reject"
ABOUT_USER = False
SUB_PATH = False


def _test(subject: object) -> int:
    return logic.FALSE


def build(spec: base.Spec) -> base.Leaf:
    return base.Leaf(
        spec.key, _test, "reject", "nothing: `reject` never matches", "reject", True, spec.path
    )
