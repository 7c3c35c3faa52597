"""Identity: OIDC sign-in, sessions, bearer tokens, downstream mTLS and per-request authorization.

:class:`vallum.proxy.identity.gate.IdentityGate` is the pipeline's real ``Gate``; build one with
:func:`build_gate` and hand it to the server. The modules, one job each:

``context``       what one configuration derives (keys, cookies, provider, minter, policies)
``authenticate``  who is calling: session cookie or bearer token, refreshed when due
``endpoints``     sign-in, callback, hand-off, sign-out, the user page, the JWKS
``responses``     the redirects and pages the gate makes itself
``gate``          the ``Gate``: intercept, authorize, headers never taken from clients
"""

from __future__ import annotations

from vallum.core import config
from vallum.proxy import session_state
from vallum.proxy.identity import gate


def build_gate(
    settings: config.Settings | None = None, state: session_state.SessionState | None = None,
) -> gate.IdentityGate:
    """The identity gate. It derives everything from the table of each request (keys,
    provider, policies, the claim headers stripped from clients), so ``settings``, the first
    configuration (a :data:`vallum.proxy.server.GateFactory` gets it), shapes nothing that a
    later table could change. ``state`` shares sign-outs and refreshes with other processes
    (default: :func:`vallum.proxy.session_state.from_environment`)."""
    return gate.IdentityGate(settings, state)
