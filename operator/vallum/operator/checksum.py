"""The route table's checksum, from digests kept with each host's routes and each certificate.

Why a module of its own: :meth:`vallum.core.config.Settings.checksum` encodes the whole
configuration as JSON on every call; with thousands of Ingresses that was most of the time a
one-object change took to reach the table (about 130 ms of 190 ms with 3,000 Ingresses). The
translator encodes each route and certificate once, when its Ingress compiles, keeps a digest of
each host's routes (:mod:`vallum.operator.translate`), and the table's checksum is a digest of
the settings (routes and certificates aside) and those digests, in table order: equal tables give
equal checksums, and any change of a route, a certificate or a setting changes it. It is not the
digest ``Settings.checksum()`` gives for the same table (the controller only compares its own
tables with each other).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping

from vallum.core import config


def encode(value: object) -> str:
    """``value`` as ``Settings.checksum`` encodes it (sorted keys, no spaces)."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), default=str)


def texts(values: Iterable[object]) -> tuple[str, ...]:
    """Each value (a route, a certificate) encoded, to be kept beside it."""
    return tuple(encode(value) for value in values)


def digest(text: str) -> str:
    """The SHA-256 of ``text`` in hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def table_checksum(
    settings: config.Settings, routes: Iterable[str], certificates: Iterable[str]
) -> str:
    """The checksum of ``settings`` whose routes and certificates are given as digests, in
    order (``routes``: one digest per host's routes, hosts in table order); the ``routes`` and
    ``certificates`` fields of ``settings`` are not read."""
    rest = encode(dataclasses.replace(settings, routes=(), certificates=()))
    return digest("\n".join([rest, "routes", *routes, "certificates", *certificates]))[:16]


def _plain(value: object) -> object:
    """Dataclasses as mappings of their fields, tuples as lists: ``config``'s encoding."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
