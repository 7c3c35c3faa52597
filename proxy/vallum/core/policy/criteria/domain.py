"""``domain``: a string matcher on the part of the email after the first ``@``.

Compared exactly: ``sub.example.com`` is not ``example.com``. An email without ``@`` (or no
email) matches no domain, whatever the matcher. Anonymous: unauthenticated.
"""

from __future__ import annotations

from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "domain"
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
        if type(email) is not str:
            return logic.FALSE
        _, at, domain = email.partition("@")
        if not at:
            return logic.FALSE
        return logic.TRUE if match(domain) else logic.FALSE

    only_is = list(m.normalized) == ["is"]
    requirement = (
        f"email domain `{m.normalized['is']}`"
        if only_is
        else f"an email domain that {m.description}"
    )
    return base.Leaf(
        spec.key,
        test,
        f"domain {m.description}",
        requirement,
        base.code_for(NAME),
        m.normalized,
        spec.path,
        about_user=True,
    )
