"""Read policy YAML the way Pomerium does: no YAML 1.1 base-60 numbers.

Pomerium reads YAML with Go's yaml.v3 (YAML 1.2), where ``after: 2:20:00`` is the string
``"2:20:00"``. PyYAML follows YAML 1.1, where it is the integer 8400 (base 60) — and ``15:04``
is 904, indistinguishable from ``0:15:04``. This loader is PyYAML's safe loader without the
base-60 forms of integers and floats, so Pomerium's own documented examples load as written.
Configuration loaders that read policies should use it too; the ``time_of_day`` criterion
rejects a base-60 integer with a hint to quote the time, for loaders that do not.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` minus base-60 integers and floats."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """Parse YAML (or JSON) text; raises ``yaml.YAMLError`` on bad input."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader subclass
