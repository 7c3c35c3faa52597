"""``domain``: a string matcher on the part of the email after the first ``@``.

Compared exactly: ``sub.example.com`` is not ``example.com``. An email without ``@`` (or no
email) matches no domain, whatever the matcher. Anonymous: unauthenticated.
"""

from __future__ import annotations

from vallum.core.policy.criteria import base, string_value
from vallum.core.policy.subject import Subject

NAME = "domain"
ABOUT_USER = True
SUB_PATH = False


def _read(subject: Subject) -> str | None:
    email = subject.identity.email if subject.identity is not None else None
    if type(email) is not str:
        return None
    _, at, domain = email.partition("@")
    return domain if at else None


def build(spec: base.Spec) -> base.Leaf:
    return string_value.build(
        spec, _read, about_user=True, exact_noun="email domain", other_noun="an email domain"
    )
