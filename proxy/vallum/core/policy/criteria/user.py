"""``user``: a string matcher on the user id (the provider's ``sub``), not the email.

Anonymous: unauthenticated. A missing or non-string id: false.
"""

from __future__ import annotations

from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "user"
ABOUT_USER = True
SUB_PATH = False


def build(spec: base.Spec) -> base.Leaf:
    m = matchers.string_matcher(spec.data, spec.path)
    match = m.test

    def test(subject: Subject) -> int:
        identity = subject.identity
        if identity is None:
            return logic.UNAUTH
        user = identity.user
        if type(user) is not str or not user:
            return logic.FALSE
        return logic.TRUE if match(user) else logic.FALSE

    only_is = list(m.normalized) == ["is"]
    requirement = f"user `{m.normalized['is']}`" if only_is else f"a user id that {m.description}"
    return base.Leaf(
        spec.key,
        test,
        f"user {m.description}",
        requirement,
        base.code_for(NAME),
        m.normalized,
        spec.path,
        about_user=True,
    )
