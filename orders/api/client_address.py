"""The client's address, worked out by the service itself from the connection
and X-Forwarded-For, with TRUSTED_PROXY_HOPS saying how many proxies in front
append to that header.

The leftmost entries of X-Forwarded-For are whatever the client wrote; only
the entries that trusted proxies appended mean anything. With one proxy in
front the client is the rightmost entry (the proxy appended the address it
saw); with N proxies, the N-th from the right. With none (the default) the
header is ignored. A header that is missing, too short or not an address falls
back to the connection's address: a request never fails over it.

Every rate limit, stream cap, log line and failure record takes the address
from here, for Django requests and for the ASGI streams alike.
"""

import ipaddress

from django.conf import settings

# What stands for a client when the connection has no address (a Unix socket).
UNKNOWN = "0.0.0.0"


def client_address(peer: str | None, forwarded_for: str | None, hops: int) -> str:
    """The address of the client behind `hops` trusted proxies, given the
    connection's address `peer` and the X-Forwarded-For value (repeated headers
    joined with ",")."""
    connection = _normalised(peer) or UNKNOWN
    if hops <= 0 or not forwarded_for:
        return connection
    entries = [entry.strip() for entry in forwarded_for.split(",")]
    if len(entries) < hops:
        return connection
    return _normalised(entries[-hops]) or connection


def request_client_address(request) -> str:
    """client_address() of a Django request. REMOTE_ADDR is the connection's
    address: daphne runs without --proxy-headers (Procfile)."""
    return client_address(
        request.META.get("REMOTE_ADDR"),
        request.META.get("HTTP_X_FORWARDED_FOR"),
        settings.TRUSTED_PROXY_HOPS,
    )


def scope_client_address(scope) -> str:
    """client_address() of an ASGI connection (the streams, routed ahead of
    Django)."""
    client = scope.get("client")
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
    ]
    return client_address(
        client[0] if client else None,
        ",".join(forwarded) or None,
        settings.TRUSTED_PROXY_HOPS,
    )


def _normalised(raw: str | None) -> str | None:
    """The address in its canonical form, or None when `raw` is not one (a
    port, a name, "unknown", an empty entry)."""
    if not raw:
        return None
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        return None
