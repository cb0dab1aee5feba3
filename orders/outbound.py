"""Outbound HTTP for webhooks: the Standard Webhooks signer and the request.

Plain values in (URL, headers, body bytes, limits), a result out: no ORM rows,
so the sender can run it with nothing of the database held. A request goes to
an address checked after DNS resolution, the same one that was checked, so a
name that resolves to a public address when the URL is added and to a private
one later (DNS rebinding) is refused each time.
"""

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from orders.exceptions import WebhookTargetRefused

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes it: whsec_ and base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(*, secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256>` of
    "id.timestamp.body" keyed by each secret's decoded bytes, space-separated
    (two during a rotation)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1,"
        + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets
    )


def signed_headers(
    *, secrets: list[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(
            secrets=secrets, msg_id=msg_id, timestamp=timestamp, body=body
        ),
    }


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


# Targets -------------------------------------------------------------------------


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL a webhook may have; raises
    WebhookTargetRefused for any other."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise WebhookTargetRefused(f"the URL {url!r} is not http or https")
    if parts.username is not None or parts.password is not None:
        raise WebhookTargetRefused("a webhook URL may not carry a user or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise WebhookTargetRefused(f"the URL {url!r} has a bad port") from error
    if not parts.hostname:
        raise WebhookTargetRefused(f"the URL {url!r} has no host")
    return parts.scheme, parts.hostname, port


def address_refusal(address: str) -> str | None:
    """Why this address may not be called, or None for a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private:
        return f"{ip} is a private address"
    if not ip.is_global or ip.is_multicast:
        return f"{ip} is not a public address"
    return None


def resolve(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to: every address the name resolves to must be
    allowed (a name with one private address is refused), and the first is
    returned. Raises WebhookTargetRefused."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise WebhookTargetRefused(
            f"the host {host!r} does not resolve ({error})"
        ) from error
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if not addresses:
        raise WebhookTargetRefused(f"the host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            refusal = address_refusal(address)
            if refusal:
                raise WebhookTargetRefused(f"the host {host!r} resolves to {refusal}")
    return addresses[0]


def check_target(url: str, *, allow_private: bool) -> None:
    """At add time: the URL's form, and where its name resolves now."""
    _, host, port = check_url(url)
    resolve(host, port, allow_private=allow_private)


# The request ---------------------------------------------------------------------


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    duration_ms: int
    response_head: bytes
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# Made once: loading the CA bundle per request costs more than the request.
_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        _tls = httpx.create_ssl_context()
    return _tls


def post(
    *,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeout: float,
    allow_private: bool,
    max_response_bytes: int,
) -> PostResult:
    """POST `body` to `url` once: no redirect followed, no proxy from the
    environment, at most `max_response_bytes` of the answer read, and the
    whole exchange cut off after `timeout` seconds. Never raises for what the
    target does; the result says what happened."""
    started = time.monotonic()

    def result(status=None, head=b"", error=""):
        elapsed = int((time.monotonic() - started) * 1000)
        return PostResult(status, elapsed, head, error)

    try:
        scheme, host, port = check_url(url)
        address = resolve(host, port, allow_private=allow_private)
    except WebhookTargetRefused as error:
        return result(error=f"refused: {error}")
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    target = parts._replace(netloc=f"{literal}:{port}").geturl()
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        with (
            httpx.Client(
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(timeout),
                verify=_tls_context(),
            ) as client,
            client.stream(
                "POST",
                target,
                content=body,
                headers={**headers, "host": host_header, "connection": "close"},
                extensions=extensions,
            ) as response,
        ):
            head = b""
            for chunk in response.iter_raw():
                head += chunk
                if len(head) >= max_response_bytes:
                    break
                if time.monotonic() - started > timeout:
                    return result(response.status_code, head, "answer too slow")
            return result(response.status_code, head[:max_response_bytes])
    except httpx.TimeoutException:
        return result(error=f"timed out after {timeout:g} s")
    except httpx.HTTPError as error:
        return result(error=f"{type(error).__name__}: {error}"[:300])
