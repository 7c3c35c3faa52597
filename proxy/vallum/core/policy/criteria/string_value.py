"""The shape shared by every criterion that is one string matcher on one value.

``email``, ``user``, ``domain``, ``http_method`` and ``http_path`` differ only in which value
they read and how they name it in reasons; this builds the compiled leaf for all of them.
"""

from __future__ import annotations

from collections.abc import Callable

from vallum.core.policy import logic, matchers
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

Read = Callable[[Subject], "str | None"]
"""The value to match, or ``None`` when there is none (the criterion is then false, whatever
the matcher: ``email: {not: x}`` does not match a user without an email)."""


def build(
    spec: base.Spec,
    read: Read,
    *,
    about_user: bool,
    exact_noun: str | None,
    other_noun: str,
) -> base.Leaf:
    """A leaf testing ``read(subject)`` with the string matcher in ``spec``.

    With ``about_user``, an anonymous request is "unauthenticated" (never true, never false)
    before ``read`` is called. Reasons say ``requires <exact_noun> `x``` for a plain ``is``
    matcher (when ``exact_noun`` is given) and ``requires <other_noun> that <matcher>`` otherwise.
    """
    m = matchers.string_matcher(spec.data, spec.path)
    match = m.test

    if about_user:

        def test(subject: Subject) -> int:
            if subject.identity is None:
                return logic.UNAUTH
            value = read(subject)
            return logic.TRUE if value is not None and match(value) else logic.FALSE

    else:

        def test(subject: Subject) -> int:
            value = read(subject)
            return logic.TRUE if value is not None and match(value) else logic.FALSE

    if exact_noun is not None and list(m.normalized) == ["is"]:
        requirement = f"{exact_noun} `{m.normalized['is']}`"
    else:
        requirement = f"{other_noun} that {m.description}"
    return base.Leaf(
        spec.key,
        test,
        f"{spec.name} {m.description}",
        requirement,
        base.code_for(spec.name),
        m.normalized,
        spec.path,
        about_user=about_user,
    )
