"""ORDER_PLACE_RATE_LIMIT on a real daphne: what a client over the limit sees,
and that the client cannot choose the address it is counted under."""

import httpx
import pytest

from tests.stack import make_stack

pytestmark = pytest.mark.e2e

BODY = {
    "customer_email": "buyer@example.com",
    "items": [{"sku": "MUG-1", "quantity": 1, "unit_price": "3.00"}],
}

# What the one proxy in front appends to X-Forwarded-For: the address it saw.
PROXY_SEEN = "198.51.100.7"


@pytest.fixture
def web_with_limit(tmp_path):
    """Only the web process: placing is what is limited, not processing."""
    # A day's window, so the test does not straddle its end.
    service = make_stack(tmp_path, ORDER_PLACE_RATE_LIMIT="2/d")
    service.migrate()
    service.start_web()
    yield service
    service.stop()


@pytest.fixture
def deployed_behind_one_proxy(tmp_path):
    """daphne started by the Procfile's web line, as behind one proxy
    (TRUSTED_PROXY_HOPS=1), with DEBUG off: a 500 is a failure record."""
    service = make_stack(
        tmp_path,
        ORDER_PLACE_RATE_LIMIT="3/d",
        TRUSTED_PROXY_HOPS="1",
        DEBUG="0",
        SECRET_KEY="e2e-" + "k" * 50,
        SECURE_SSL_REDIRECT="0",
    )
    service.migrate()
    service.start_web_from_the_procfile()
    yield service
    service.stop()


def failure_records(service) -> int:
    count = service.manage(
        "shell",
        "-c",
        "from orders.models import FailureRecord; print(FailureRecord.objects.count())",
    )
    return int(count.stdout.splitlines()[-1])


def test_placing_over_the_limit_answers_429_with_retry_after_in_the_error_shape(
    web_with_limit,
):
    with httpx.Client(base_url=web_with_limit.base_url, timeout=10) as client:
        answers = [
            client.post("/api/orders", json=BODY, headers={"Idempotency-Key": f"k{n}"})
            for n in range(3)
        ]
        later = client.get(answers[0].json()["status_url"])

    assert [answer.status_code for answer in answers] == [202, 202, 429]
    refused = answers[2]
    assert refused.headers["content-type"] == "application/json"
    assert set(refused.json()) == {"error", "detail"}
    assert refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 24 * 3600
    # Reading is not limited.
    assert later.status_code == 200
    count = web_with_limit.manage(
        "shell", "-c", "from orders.models import Order; print(Order.objects.count())"
    )
    assert count.stdout.splitlines()[-1] == "2"


def test_a_made_up_leftmost_address_does_not_dodge_the_limit(
    deployed_behind_one_proxy,
):
    """Each placement claims another address in front of the one the proxy
    appended: the client is still counted as the proxy saw it."""
    with httpx.Client(base_url=deployed_behind_one_proxy.base_url, timeout=10) as c:
        answers = [
            c.post(
                "/api/orders",
                json=BODY,
                headers={"X-Forwarded-For": f"203.0.113.{n}, {PROXY_SEEN}"},
            )
            for n in range(8)
        ]

    assert [answer.status_code for answer in answers] == [202] * 3 + [429] * 5


# Not addresses: a name, an address with a port, empty entries, a long word.
MALFORMED = ["unknown", "1.2.3.4:5678", ",", "x" * 300, "", ", ,"]


def test_a_malformed_forwarded_for_header_is_never_a_server_error(
    deployed_behind_one_proxy,
):
    with httpx.Client(base_url=deployed_behind_one_proxy.base_url, timeout=10) as c:
        answers = {
            value: [
                c.post(
                    "/api/orders", json=BODY, headers={"X-Forwarded-For": value}
                ).status_code
                for _ in range(2)
            ]
            + [c.get("/", headers={"X-Forwarded-For": value}).status_code]
            for value in MALFORMED
        }

    # Each is counted as the connection's address (127.0.0.1): three placements
    # pass, every later one is over 3/d; the page is not limited.
    assert [status for value in MALFORMED for status in answers[value][:2]] == [
        202
    ] * 3 + [429] * 9
    assert {answers[value][2] for value in MALFORMED} == {200}
    assert failure_records(deployed_behind_one_proxy) == 0
