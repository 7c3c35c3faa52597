"""``groups``: a string list matcher on the user's groups (``has`` / ``is`` / ``exclude``).

Groups are the identity's ``groups`` (filled from the provider's groups claim); entries that
are not strings never match, and the policy's values must be strings (``groups: 42`` is an
error: quote it). Anonymous:
unauthenticated, so ``groups: {exclude: contractors}`` does not admit anonymous users.
"""

from __future__ import annotations

from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "groups"
ABOUT_USER = True
SUB_PATH = False


def build(spec: base.Spec) -> base.Leaf:
    m = matchers.list_matcher(spec.data, spec.path)
    match = m.test

    if list(m.normalized) == ["has"]:
        wanted = m.normalized["has"]
        requirement = f"group `{wanted}`"

        def test(subject: Subject) -> int:
            if subject.identity is None:
                return logic.UNAUTH
            return logic.TRUE if subject.has_group(wanted) else logic.FALSE

    else:
        requirement = f"groups that {m.description}"

        def test(subject: Subject) -> int:
            if subject.identity is None:
                return logic.UNAUTH
            return logic.TRUE if match(subject.group_list()) else logic.FALSE

    return base.Leaf(
        spec.key,
        test,
        f"groups {m.description}",
        requirement,
        base.code_for(NAME),
        m.normalized,
        spec.path,
        about_user=True,
    )
