"""``email``: a string matcher on the signed-in user's email address (exact, case-sensitive).

Anonymous: unauthenticated. An identity whose email is missing or not a string: false, whatever
the matcher (``email: {not: x}`` does not match a user without an email).
"""

from __future__ import annotations

from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "email"
ABOUT_USER = True
SUB_PATH = False


def build(spec: base.Spec) -> base.Leaf:
    m = matchers.string_matcher(spec.data, spec.path)
    match = m.test

    def test(subject: Subject) -> int:
        identity = subject.identity
        if identity is None:
            return logic.UNAUTH
        email = identity.email
        if type(email) is not str or not email:
            return logic.FALSE
        return logic.TRUE if match(email) else logic.FALSE

    requirement = m.normalized["is"] if list(m.normalized) == ["is"] else ""
    return base.Leaf(
        spec.key,
        test,
        f"email {m.description}",
        f"email `{requirement}`" if requirement else f"an email that {m.description}",
        base.code_for(NAME),
        m.normalized,
        spec.path,
        about_user=True,
    )
