"""``source_ip``: the client address is in one of the given IPs or CIDR ranges.

The value is a string or a list of strings. A bare address means /32 (/128); a range with host
bits set (``192.168.1.1/24``) is accepted as its network. IPv4-mapped IPv6 is IPv4, on both
sides, as in Pomerium (Go's ``net.IPNet.Contains`` reads them so): a client reported as
``::ffff:10.0.0.1`` (dual-stack listeners do) is ``10.0.0.1``, and a policy address
``::ffff:1.2.3.4`` or range ``::ffff:10.0.0.0/104`` is ``1.2.3.4`` or ``10.0.0.0/8``. A mapped
range shorter than /96 is refused (Go would read ``::ffff:10.0.0.0/80`` as every IPv4 address).
Other IPv6 ranges (``::/0``) match IPv6 clients only, as in Pomerium. The client address is
``RequestInfo.client_ip`` (after ``xff_num_trusted_hops``); a missing or unparsable one matches
nothing.
"""

from __future__ import annotations

import functools
import ipaddress

from vallum.core.errors import PolicyError
from vallum.core.policy import logic
from vallum.core.policy.criteria import base
from vallum.core.policy.subject import Subject

NAME = "source_ip"
ABOUT_USER = False
SUB_PATH = False

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(data: object, path: str) -> tuple[Network, ...]:
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PolicyError(path, "expected an IP address or CIDR range, or a non-empty list of them")
    out: list[Network] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(data, list) else path
        if not isinstance(item, str):
            raise PolicyError(where, f"expected an IP address or CIDR range, got {item!r}")
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise PolicyError(where, f"not an IP address or CIDR range: {item!r}") from None
        out.append(_unmapped(network, item, where))
    return tuple(out)


def _unmapped(network: Network, written: str, where: str) -> Network:
    """An IPv4-mapped IPv6 address or range as the IPv4 one it maps (``written`` as given:
    masking may already have cleared the ``ffff`` of a short prefix)."""
    if network.version != 6:
        return network
    address = ipaddress.ip_address(written.strip().split("/", 1)[0])
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is None:
        return network
    if network.prefixlen < 96:
        raise PolicyError(
            where,
            f"an IPv4-mapped range needs a prefix of /96 or longer ({written!r}): "
            f"write the IPv4 range, e.g. {mapped}/{max(network.prefixlen - 96, 0)}",
        )
    return ipaddress.IPv4Network((mapped, network.prefixlen - 96), strict=False)


@functools.lru_cache(maxsize=8192)
def parse_client_ip(text: str) -> tuple[int, int] | None:
    """``(version, address as int)`` of a client address (IPv4-mapped IPv6 as IPv4), cached:
    the same clients come back, and parsing costs more than the rest of the criterion."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            address = mapped
    return address.version, int(address)


def build(spec: base.Spec) -> base.Leaf:
    networks = _networks(spec.data, spec.path)
    ranges = tuple((n.version, int(n.network_address), int(n.broadcast_address)) for n in networks)

    def test(subject: Subject) -> int:
        text = subject.request.client_ip
        if type(text) is not str or not text:
            return logic.FALSE
        parsed = parse_client_ip(text)
        if parsed is None:
            return logic.FALSE
        version, value = parsed
        for net_version, first, last in ranges:
            if net_version == version and first <= value <= last:
                return logic.TRUE
        return logic.FALSE

    normalized = [str(n) for n in networks]
    shown = ", ".join(normalized)
    return base.Leaf(
        spec.key,
        test,
        f"source_ip in {shown}",
        f"a client address in {shown}",
        base.code_for(NAME),
        normalized,
        spec.path,
    )
