"""``email``: a string matcher on the signed-in user's email address (exact, case-sensitive).

Anonymous: unauthenticated. An identity whose email is missing or not a string: false, whatever
the matcher (``email: {not: x}`` does not match a user without an email).
"""

from __future__ import annotations

from vallum.core.policy.criteria import base, string_value
from vallum.core.policy.subject import Subject

NAME = "email"
ABOUT_USER = True
SUB_PATH = False


def _read(subject: Subject) -> str | None:
    email = subject.identity.email if subject.identity is not None else None
    return email if type(email) is str and email else None


def build(spec: base.Spec) -> base.Leaf:
    return string_value.build(
        spec, _read, about_user=True, exact_noun="email", other_noun="an email"
    )
