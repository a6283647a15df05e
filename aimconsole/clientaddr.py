"""The client's address, believing proxy headers only from proxies the admin trusts.

``X-Forwarded-For`` is written by whoever sends the request: a client can claim to be
127.0.0.1. It is read only when the peer (``REMOTE_ADDR``) is in ``AIM_TRUSTED_PROXIES``, and
then from the right: each trusted proxy appends the address it received the request from, so
the first untrusted hop, counted from the right, is the client. Anything left of it was
written by the client and is ignored.

One function for everything that keys on the client: the login lockout (django-axes,
``AXES_CLIENT_IP_CALLABLE``), the ``/metrics`` network rule and the audit trail's source
address. Run daphne *without* ``--proxy-headers``: daphne would believe the header from any
peer and hand Django the claimed address as ``REMOTE_ADDR``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPAddress | None:
    """An address as a proxy or server writes it (``1.2.3.4``, ``1.2.3.4:5678``, ``::1``,
    ``[::1]:443``), IPv4-mapped IPv6 folded to IPv4; None when it is not an address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=32)
def networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """Parsed networks (settings hold strings; the settings module checked them)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def in_networks(address: IPAddress | None, cidrs: Iterable[str]) -> bool:
    return address is not None and any(address in network for network in networks(tuple(cidrs)))


def client_ip(request: HttpRequest) -> IPAddress | None:
    """The client's address (see the module doc), or None when it cannot be known."""
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    trusted = tuple(getattr(settings, "TRUSTED_PROXIES", ()))
    if not in_networks(peer, trusted):
        return peer
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            # A trusted proxy passed on something that is not an address: the client is
            # unknown. Not the proxy's own address, which may be one /metrics trusts.
            return None
        client = address
        if not in_networks(address, trusted):
            break
    return client


def client_address(request: HttpRequest) -> str:
    """``client_ip`` as text, "" when unknown (the form django-axes and audit rows store)."""
    address = client_ip(request)
    return "" if address is None else str(address)
