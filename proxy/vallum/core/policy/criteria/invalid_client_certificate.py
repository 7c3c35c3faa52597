"""``invalid_client_certificate``: the request lacks a trusted client certificate.

True when a client certificate was presented but did not verify against the configured client
CA (or was revoked), and — when a client CA is configured for the route (``downstream_mtls``) —
also when no certificate was presented at all (Pomerium's ``client-certificate-required``).
Without a client CA, a request with no certificate is not "invalid". The value is ignored.

With ``downstream_mtls.enforcement: policy_with_default_deny`` (the default), every route gets
a deny rule with this criterion (see ``legacy.compile_route_policy``).
"""

from __future__ import annotations

from vallum.core.policy import logic
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "invalid_client_certificate"
ABOUT_USER = False
SUB_PATH = False


def build(spec: base.Spec) -> base.Leaf:
    required = spec.options.client_ca

    def test(subject: Subject) -> int:
        cert = subject.request.client_cert
        if cert is None:
            return logic.TRUE if required else logic.FALSE
        return logic.FALSE if cert.verified is True else logic.TRUE

    return base.Leaf(
        spec.key,
        test,
        "invalid_client_certificate",
        "no valid client certificate",
        "invalid-client-certificate",
        True,
        spec.path,
    )
