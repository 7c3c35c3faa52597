"""``user``: a string matcher on the user id (the provider's ``sub``), not the email.

Anonymous: unauthenticated. A missing or non-string id: false.
"""

from __future__ import annotations

from vallum.core.policy.criteria import base, string_value
from vallum.core.policy.subject import Subject

NAME = "user"
ABOUT_USER = True
SUB_PATH = False


def _read(subject: Subject) -> str | None:
    user = subject.identity.user if subject.identity is not None else None
    return user if type(user) is str and user else None


def build(spec: base.Spec) -> base.Leaf:
    return string_value.build(
        spec, _read, about_user=True, exact_noun="user", other_noun="a user id"
    )
