"""The request as the pipeline sees it: a small value of our own, not a framework's object.

Both the HTTP/1.1 hot path and any later listener (HTTP/2, forward-auth) build a ``RequestInfo``
and hand it to the same pipeline: match -> authenticate -> authorize -> mint -> forward.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The client certificate presented on the TLS connection, as the policy needs it.

    ``der`` is the leaf certificate; ``chain_der`` the intermediates presented after it.
    ``verified`` says whether it chained to the configured client CA (and was not revoked);
    ``error`` says why not.
    """

    der: bytes
    verified: bool
    chain_der: tuple[bytes, ...] = ()
    error: str | None = None


@dataclass(slots=True)
class RequestInfo:
    """One incoming request. Treat it as a value: code that needs a different one (the pipeline,
    for the normalised path) makes a copy with ``dataclasses.replace``. Not ``frozen``: a frozen
    dataclass sets each field through ``object.__setattr__``, which costs three times as much on
    the per-request path (measured: 2.1 µs against 0.6 µs).

    ``host`` is lower-case without port or trailing dot. ``path`` is the request path (no
    query): raw until routing; the pipeline replaces it with the normalised, matched path before
    the gate and the policy see it. ``headers`` maps lower-case names to values (repeated headers
    joined with ``", "``). ``client_ip`` is the trusted client address after
    ``xff_num_trusted_hops``.
    """

    method: str
    host: str
    path: str
    query: str = ""
    scheme: str = "https"
    headers: Mapping[str, str] = field(default_factory=dict)
    client_ip: str = ""
    client_cert: ClientCertificate | None = None
    time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
