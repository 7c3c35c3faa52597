"""``authenticated_user``: true for any signed-in user; the value is ignored.

Anonymous requests are "unauthenticated" (sign in), never false, so ``not: [authenticated_user]``
cannot admit anonymous users either.
"""

from __future__ import annotations

from vallum.core.policy import logic
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "authenticated_user"
ABOUT_USER = True
SUB_PATH = False


def _test(subject: Subject) -> int:
    return logic.UNAUTH if subject.identity is None else logic.TRUE


def build(spec: base.Spec) -> base.Leaf:
    return base.Leaf(
        spec.key,
        _test,
        "authenticated_user",
        "a signed-in user",
        "user-unauthenticated",
        True,
        spec.path,
        about_user=True,
    )
