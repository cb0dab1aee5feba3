"""A double click, for real: many placements with one Idempotency-Key arriving at
a real daphne at the same moment make one order, and every answer names it."""

import json
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.e2e

BODY = {
    "customer_email": "buyer@example.com",
    "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
}


def place_at_once(stack, key: str, clicks: int) -> list[tuple[int, dict]]:
    """`clicks` POSTs with the same key and body, each on its own connection
    (opened beforehand), released together by a barrier."""
    barrier = threading.Barrier(clicks)
    clients = [httpx.Client(base_url=stack.base_url, timeout=30) for _ in range(clicks)]
    for client in clients:
        # Connected before the barrier, so the requests leave together.
        assert client.get("/healthz").status_code == 200

    def click(client: httpx.Client) -> tuple[int, dict]:
        barrier.wait(timeout=30)
        response = client.post(
            "/api/orders", json=BODY, headers={"Idempotency-Key": key}
        )
        if response.headers.get("Content-Type") != "application/json":
            return response.status_code, {"body": response.text[:300]}
        return response.status_code, response.json()

    try:
        with ThreadPoolExecutor(max_workers=clicks) as pool:
            return list(pool.map(click, clients))
    finally:
        for client in clients:
            client.close()


def orders_per_key(stack, keys: list[str]) -> dict[str, list[str]]:
    """The order ids stored under each key, read from the database itself."""
    result = stack.manage(
        "shell",
        "-c",
        "import json\n"
        "from orders.models import Order\n"
        f"keys = {keys!r}\n"
        "print(json.dumps({key: list(Order.objects.filter(idempotency_key=key)"
        ".values_list('order_id', flat=True)) for key in keys}))",
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_double_clicks_make_one_order(stack, *, rounds: int, clicks: int):
    """`rounds` double clicks, and more (up to four times as many) until two
    clicks of one round have raced: on a loaded machine the requests of a
    round can arrive one after the other, and would prove nothing."""
    answers: dict[str, list[tuple[int, dict]]] = {}
    raced: list[str] = []
    while not raced and len(answers) < 4 * rounds:
        keys = [f"double-click-{secrets.token_hex(6)}" for _ in range(rounds)]
        answers |= {key: place_at_once(stack, key, clicks) for key in keys}
        log = stack.web_log.read_text()
        raced = [
            key for key in answers if f"Idempotency-Key {key!r}: a concurrent" in log
        ]

    stored = orders_per_key(stack, list(answers))
    for key, replies in answers.items():
        statuses = sorted(status for status, _ in replies)
        assert statuses == [200] * (clicks - 1) + [202], (key, replies)
        named = {body.get("order_id") for _, body in replies}
        assert len(named) == 1, (key, replies)
        assert stored[key] == list(named), (key, stored[key], named)
    for key in answers:
        document = stack.wait_for_terminal(stored[key][0])
        assert document["status"] == "COMPLETED"
        assert [e["type"] for e in document["events"]].count("order.created") == 1
    assert "Internal Server Error" not in stack.web_log.read_text()
    # The premise: some clicks found no order yet and lost the INSERT race.
    assert raced, f"no two clicks overlapped in {len(answers)} rounds: nothing raced"


def test_a_double_click_on_sqlite_places_one_order_and_both_answers_name_it(stack):
    assert_double_clicks_make_one_order(stack, rounds=5, clicks=8)
