"""A policy file for ``vallum policy check``/``eval``, read as the config file is read.

Why a module of its own: ``vallum policy`` takes a *bare policy* (a rule with ``allow``/``deny``,
a list of rules, or null) or a *route-like mapping* (a route's access options: ``policy``,
``allowed_users``, ...), and what it says about a policy must be what ``vallum config check`` and
``vallum serve`` say about the same policy in a route. So the text goes through the config
loader's YAML reader (:mod:`.nodes`: Pomerium's reading of ``8:00``, duplicate keys refused,
bounded aliases and messages) and a route-like mapping through the route readers of
:mod:`.routes` (``allowed_users: "a@x,b@x"`` is a list of two here too). Nothing here prints.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from vallum.core import config, errors
from vallum.core.configfile import nodes, routes, values


@dataclasses.dataclass(frozen=True)
class PolicyFile:
    """What a policy file holds: a ``route`` (route-like mapping) or bare ``policy`` data."""

    source: str
    root: nodes.Node
    route: config.Route | None
    policy: Any
    ignored: tuple[str, ...] = ()
    """Route keys of a route-like mapping that are not access options (``from``, ``to``)."""

    def locate(self, inner: str) -> tuple[int, str]:
        """The line and key path of a policy compile error at the compiler's ``inner`` path."""
        if self.route is not None:
            return routes.locate_policy_error(self.root, "", inner)
        return routes.locate(self.root, inner).line, inner


def loads(text: str, source: str) -> PolicyFile:
    """Read policy file ``text`` (``source`` names it); raises ``ConfigError`` listing every
    problem, each with its line."""
    ctx = nodes.Context(source, os.getcwd())
    root = nodes.parse_yaml(text, ctx)
    if root is None:
        raise errors.ConfigError(ctx.report(ctx.problems))
    if isinstance(root.value, dict) and any(k in root.value for k in routes.ACCESS_KEYS):
        route, ignored = _route_like(ctx, root)
        if route is None or ctx.problems:
            raise errors.ConfigError(ctx.report(ctx.problems))
        return PolicyFile(source, root, route, None, ignored)
    try:
        data = root.plain()
    except ValueError as exc:
        ctx.problem(root.line, "", str(exc))
        raise errors.ConfigError(ctx.report(ctx.problems)) from None
    return PolicyFile(source, root, None, data)


def _route_like(
    ctx: nodes.Context, root: nodes.Node
) -> tuple[config.Route | None, tuple[str, ...]]:
    mixed = [k for k in ("allow", "deny") if k in root.value]
    if mixed:
        present = ", ".join(k for k in routes.ACCESS_KEYS if k in root.value)
        ctx.problem(
            root.key_lines.get(mixed[0], root.line),
            mixed[0],
            f"mixes route options ({present}) with top-level allow/deny; put the rules under "
            "`policy:`",
        )
        return None, ()
    # Every route key is known (a typo is still an unknown key); only the access options are read.
    spec = {
        key: reader if key in routes.ACCESS_KEYS else values.r_node
        for key, reader in routes.ROUTE_KEYS.items()
    }
    got = ctx.section(root, "", spec)
    routes.check_public(ctx, root, "", got)
    ignored = tuple(k for k in root.value if k in routes.ROUTE_KEYS and k not in routes.ACCESS_KEYS)
    if ctx.problems:
        return None, ignored
    source = got.get("from")
    from_url = source.value if isinstance(source, nodes.Node) else None
    route = config.Route(
        from_url=from_url if isinstance(from_url, str) else "",
        host=config.Host(""),
        to=(),
        name=ctx.source,
        source=f"{ctx.source}:{root.line}",
        **{k: got[k] for k in routes.ACCESS_KEYS if k in got},
    )
    return route, ignored
