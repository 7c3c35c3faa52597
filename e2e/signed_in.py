"""A Settings object that signs users in with a cookie secret known to the test, and cookies.

Several e2e files need a controller whose signed-in requests they can make without an identity
provider: the Settings' ``cookie_secret`` is chosen here, so a session cookie sealed by Vallum's
own code (:mod:`vallum.proxy.sessions`) is exactly what a sign-in would have set. The provider
named in the Settings is never reached.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Iterator

from e2e import conftest


@contextlib.contextmanager
def settings(cluster: conftest.Cluster, home: str, prefix: str,
             pomerium_compatibility: bool = False) -> Iterator[tuple[str, str]]:
    """Secrets ``bootstrap`` (random cookie secret, fresh signing key) and ``idp`` in ``home``
    and a Settings object ``<prefix>-<random>`` using them: (Settings name, cookie secret as
    the routes file spells it). The Settings object is deleted afterwards."""
    from vallum.proxy import jwt

    raw = os.urandom(32)
    name = f"{prefix}-{os.urandom(4).hex()}"
    key = jwt.private_key_pem(jwt.generate_private_key())
    cluster.apply(f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: bootstrap}}
        data:
          cookie_secret: {base64.b64encode(raw).decode()}
          signing_key: {base64.b64encode(key.encode()).decode()}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: idp}}
        stringData: {{client_id: vallum, client_secret: not-used-here}}
    """, home)
    compatibility = "pomeriumCompatibility: true" if pomerium_compatibility else ""
    cluster.apply(f"""
        apiVersion: vallum.dev/v1alpha1
        kind: Settings
        metadata: {{name: {name}}}
        spec:
          secrets: {home}/bootstrap
          authenticate: {{url: "https://auth.e2e.test"}}
          identityProvider: {{provider: oidc, url: "https://127.0.0.1:9", secret: {home}/idp}}
          {compatibility}
    """)
    try:
        yield name, base64.b64encode(raw).decode()
    finally:
        cluster.kubectl("delete", "settings", name, "--ignore-not-found", check=False)


def cookie(cookie_secret: str, email: str = "alice@e2e.test", groups: tuple[str, ...] = (),
           session_id: str | None = None) -> str:
    """A ``Cookie`` header with a session for ``email`` (user: its local part), sealed as a
    sign-in seals it; a fresh session id unless ``session_id`` is given."""
    from vallum.core import config, identity
    from vallum.proxy import sessions

    settings = config.Settings(cookie_secret=cookie_secret)
    jar = sessions.SessionCookies(settings, sessions.Sealer(sessions.secret_bytes(settings)))
    now = time.time()
    user = email.split("@")[0]
    who = identity.Identity(user=user, email=email, name=user.title(), groups=groups,
                            claims={"sub": user},
                            session_id=session_id or f"e2e-{os.urandom(8).hex()}",
                            expires_at=now + 600)
    session = sessions.Session(who, "rt", expires_at=now + 600, refresh_at=now + 300)
    return "; ".join(h.split(";")[0] for h in jar.set_headers(session))
