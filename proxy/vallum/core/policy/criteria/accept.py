"""``accept``: always true. The value is ignored (``accept: false`` still allows), as in
Pomerium."""

from __future__ import annotations

from vallum.core.policy import logic
from vallum.core.policy.criteria import base

NAME = "accept"
ABOUT_USER = False
SUB_PATH = False


def _test(subject: object) -> int:
    return logic.TRUE


def build(spec: base.Spec) -> base.Leaf:
    return base.Leaf(spec.key, _test, "accept", "accept", "accept", True, spec.path)
