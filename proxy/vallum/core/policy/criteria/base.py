"""What every criterion module provides: a build function returning a ``Leaf``.

A criterion module (one per criterion, named after it) exposes ``NAME``, ``ABOUT_USER`` (whether
an anonymous request makes it "unauthenticated" rather than false), ``SUB_PATH`` (whether it
takes ``name/sub-path``, only ``claim`` does) and ``build(spec) -> Leaf``. It validates its data
there, raising ``PolicyError`` with the path it was given, and returns a closure that evaluates
the criterion against a ``Subject`` in three-valued logic (``logic.TRUE/FALSE/UNAUTH``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vallum.core.policy import logic


@dataclass(frozen=True, slots=True)
class Options:
    """Compile-time facts that change what a criterion means on this route.

    ``client_ca``: a client CA is configured (``downstream_mtls``), so a request *without* a
    client certificate has an invalid one (Pomerium's ``client-certificate-required``).
    """

    client_ca: bool = False


@dataclass(frozen=True, slots=True)
class Spec:
    """One criterion as written: ``key`` (``claim/org.team``), its parts, data and place."""

    key: str
    name: str
    sub_path: str
    data: Any
    path: str
    options: Options


@dataclass(frozen=True, slots=True)
class Leaf:
    """A compiled criterion.

    ``description`` reads as a condition (``groups has admins``); ``requirement`` completes
    "requires ..." (``group `admins```); ``code`` is the reason code when it fails
    (``groups-unauthorized``); ``normalized`` is the data in its expanded form.
    """

    key: str
    test: logic.Test
    description: str
    requirement: str
    code: str
    normalized: Any
    path: str
    about_user: bool = False


def code_for(name: str) -> str:
    """Pomerium-style failure code: ``http_method`` -> ``http-method-unauthorized``."""
    return name.replace("_", "-") + "-unauthorized"

