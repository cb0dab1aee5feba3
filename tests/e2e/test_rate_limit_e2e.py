"""ORDER_PLACE_RATE_LIMIT on a real daphne: what a client over the limit sees."""

import httpx
import pytest

from tests.stack import make_stack

pytestmark = pytest.mark.e2e

BODY = {
    "customer_email": "buyer@example.com",
    "items": [{"sku": "MUG-1", "quantity": 1, "unit_price": "3.00"}],
}


@pytest.fixture
def web_with_limit(tmp_path):
    """Only the web process: placing is what is limited, not processing."""
    # A day's window, so the test does not straddle its end.
    service = make_stack(tmp_path, ORDER_PLACE_RATE_LIMIT="2/d")
    service.migrate()
    service.start_web()
    yield service
    service.stop()


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
