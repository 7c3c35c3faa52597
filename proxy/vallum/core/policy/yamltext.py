"""Read policy YAML the way Pomerium does: no YAML 1.1 base-60 numbers.

Pomerium reads YAML with Go's yaml.v3 (YAML 1.2), where ``after: 2:20:00`` is the string
``"2:20:00"``. PyYAML follows YAML 1.1, where it is the integer 8400 (base 60) — and ``15:04``
is 904, indistinguishable from ``0:15:04``. This loader is PyYAML's safe loader without the
base-60 forms of integers and floats, so Pomerium's own documented examples load as written.

Every file Vallum reads as YAML is read with these resolvers (the config file through
:mod:`vallum.core.configfile`, with libyaml's parser as :class:`CLoader`), so ``vallum policy
check``, ``vallum config check`` and ``vallum serve`` give one answer for ``after: 8:00``. The
``time_of_day`` criterion still rejects a base-60 integer with a hint to quote the time, for
callers that hand it data read some other way.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` minus base-60 integers and floats."""


CLoader: type[yaml.CSafeLoader] | None = None
"""The same resolvers on libyaml's parser (fast), or None when PyYAML was built without it."""


def _without_base_60(loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader]) -> None:
    loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        _INT,
        re.compile(
            r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
        ),
        list("-+0123456789"),
    )
    loader.add_implicit_resolver(
        _FLOAT,
        re.compile(
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
            r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )


_without_base_60(Loader)
if yaml.__with_libyaml__:

    class _CLoader(yaml.CSafeLoader):
        """``yaml.CSafeLoader`` minus base-60 integers and floats."""

    _without_base_60(_CLoader)
    CLoader = _CLoader


def load(text: str) -> Any:
    """Parse YAML (or JSON) text; raises ``yaml.YAMLError`` on bad input."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader subclass
