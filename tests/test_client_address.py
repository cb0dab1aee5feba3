"""The client's address from the connection and X-Forwarded-For
(orders/api/client_address.py): only what trusted proxies appended counts."""

import pytest

from orders.api.client_address import UNKNOWN, client_address, scope_client_address


def test_without_trusted_proxies_the_header_is_ignored():
    assert client_address("10.0.0.5", "1.2.3.4", 0) == "10.0.0.5"


def test_behind_one_proxy_the_rightmost_entry_is_the_client():
    """The leftmost entries are what the client wrote; the proxy appended the last."""
    assert client_address("10.0.0.5", "6.6.6.6, 203.0.113.7", 1) == "203.0.113.7"


def test_behind_two_proxies_the_second_entry_from_the_right_is_the_client():
    assert (
        client_address("10.0.0.5", "6.6.6.6, 203.0.113.7, 10.0.0.9", 2) == "203.0.113.7"
    )


@pytest.mark.parametrize(
    "forwarded_for",
    [None, "", ",", "unknown", "1.2.3.4:5678", "x" * 300, "203.0.113.7 ,", " "],
)
def test_a_missing_or_malformed_header_falls_back_to_the_connection(forwarded_for):
    assert client_address("10.0.0.5", forwarded_for, 1) == "10.0.0.5"


def test_a_header_shorter_than_the_trusted_hops_falls_back_to_the_connection():
    assert client_address("10.0.0.5", "203.0.113.7", 2) == "10.0.0.5"


def test_addresses_are_written_in_their_canonical_form():
    assert client_address("10.0.0.5", "2001:DB8:0:0::1", 1) == "2001:db8::1"


def test_a_connection_without_an_address_is_unknown():
    assert client_address(None, None, 0) == UNKNOWN


def test_an_asgi_scope_joins_repeated_headers(settings):
    settings.TRUSTED_PROXY_HOPS = 1
    scope = {
        "client": ("10.0.0.5", 4000),
        "headers": [
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-forwarded-for", b"203.0.113.7"),
        ],
    }
    assert scope_client_address(scope) == "203.0.113.7"
