"""Evaluate a compiled policy against a request and an identity, with reasons.

The allowed path does no allocation beyond one ``Subject``: deny blocks, then allow blocks, and
the first allow block that holds returns its prebuilt decision. Everything else (a deny, "sign
in", "nothing allowed you") takes the slow path, which evaluates again to explain: the deny rule
that matched, or each condition that was missing.

``evaluate`` never raises: an unexpected error while evaluating denies the request (fail
closed) with an ``internal-error`` reason.
"""

from __future__ import annotations

from vallum.core.identity import Identity
from vallum.core.policy import compiler, logic
from vallum.core.policy.compiler import Node
from vallum.core.policy.decision import Decision, Reason
from vallum.core.policy.subject import Subject
from vallum.core.request import RequestInfo

MAX_REASONS = 20
_TRUE, _UNAUTH = logic.TRUE, logic.UNAUTH

_NO_ALLOW = Reason("no-allow-rule", "the policy has no allow rule, so nobody is allowed")


def evaluate(
    policy: compiler.CompiledPolicy, request: RequestInfo, identity: Identity | None
) -> Decision:
    """Decide whether ``identity`` (``None``: anonymous) may make ``request`` under ``policy``."""
    fixed = policy.fixed
    if fixed is not None:
        return fixed
    try:
        subject = Subject(request, identity)
        unsure_deny = False
        for block in policy.deny:
            value = block.test(subject)
            if value == _TRUE:
                return block.hit
            if value == _UNAUTH:
                unsure_deny = True
        if not unsure_deny:
            for block in policy.allow:
                if block.test(subject) == _TRUE:
                    return block.hit
        return _explain(policy, subject)
    except Exception as exc:  # fail closed, say why
        message = f"policy evaluation failed ({type(exc).__name__}: {exc}); denied"
        return Decision(False, (Reason("internal-error", message),))


def _explain(policy: compiler.CompiledPolicy, subject: Subject) -> Decision:
    """The slow path: no deny block held for sure, and no allow block let the request in."""
    reasons: list[Reason] = []
    values = [block.test(subject) for block in policy.allow]
    if logic.TRUE in values:
        # Allowed unless a deny block that depends on the user holds: sign in to find out.
        for block in policy.deny:
            if block.test(subject) == logic.UNAUTH:
                reasons.append(
                    Reason(
                        "user-unauthenticated",
                        f"sign-in required: {block.label} depends on who you are: "
                        f"{block.node.describe()}",
                        block.node.path,
                    )
                )
        return Decision(False, _cap(reasons), needs_login=True)
    if not policy.allow:
        return Decision(False, (_NO_ALLOW,))
    for block, value in zip(policy.allow, values, strict=True):
        if len(reasons) > 2 * MAX_REASONS:
            break
        _why_not(block.node, subject, True, reasons, value)
    return Decision(False, _cap(reasons), needs_login=logic.UNAUTH in values)


def _why_not(
    node: Node, subject: Subject, want: bool, out: list[Reason], value: int | None = None
) -> None:
    """Append why ``node`` is not ``want`` (true / false) for this subject."""
    if value is None:
        value = node.test(subject)
    if value == (logic.TRUE if want else logic.FALSE):
        return
    leaf = node.leaf
    if leaf is not None:
        if value == logic.UNAUTH:
            what = f"requires {leaf.requirement}" if want else f"to check {leaf.description}"
            out.append(Reason("user-unauthenticated", f"sign-in required: {what}", leaf.path))
        elif want:
            out.append(Reason(leaf.code, f"requires {leaf.requirement}", leaf.path))
        else:
            out.append(Reason(leaf.code, f"must not match: {leaf.description}", leaf.path))
        return
    flip = node.op in ("not", "nor")
    for child in node.children:
        _why_not(child, subject, want != flip, out)


def _cap(reasons: list[Reason]) -> tuple[Reason, ...]:
    unique = list(dict.fromkeys(reasons))
    if len(unique) > MAX_REASONS:
        more = len(unique) - MAX_REASONS + 1
        unique = [*unique[: MAX_REASONS - 1], Reason("more", f"… and {more} more reasons")]
    return tuple(unique)
