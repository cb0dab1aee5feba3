import pytest

from orders.api.validation import parse_order_request
from orders.services.orders import order_place

ORDER_BODY = {
    "customer_email": "buyer@example.com",
    "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
}


@pytest.fixture(autouse=True)
def simulated_gateway_dir(settings, tmp_path):
    """Each test's simulated gateways start with an empty ledger of their own."""
    settings.ORDER_SIMULATED_GATEWAY_DIR = tmp_path / "simulated-gateway"
    return settings.ORDER_SIMULATED_GATEWAY_DIR


@pytest.fixture(autouse=True)
def no_rate_limit(settings):
    """Tests place orders from one address faster than any customer; the rate
    limit's own tests turn it on (tests/test_rate_limit.py)."""
    settings.ORDER_PLACE_RATE_LIMIT = "0"


@pytest.fixture(autouse=True)
def fresh_worker_batch_sizer(monkeypatch):
    """Each test's tasks run as in a worker process just started: its batch
    sizer has timed no order yet, so whatever ran in earlier tests does not
    decide how many orders a task takes along."""
    from orders import tasks
    from orders.services.attempts import BatchSizer

    monkeypatch.setattr(tasks, "_batch_sizer", BatchSizer())


@pytest.fixture
def immediate_retries(settings):
    """Retries due at once, three attempts: a test processes an order to its end
    by calling the worker's service in a loop."""
    settings.ORDER_RETRY_BASE_SECONDS = 0
    settings.ORDER_RETRY_JITTER = 0
    settings.ORDER_MAX_ATTEMPTS = 3


@pytest.fixture
def place_order():
    """Place an order through the service, as the API would."""
    import json

    def place(simulate: dict | None = None, **overrides):
        body = {**ORDER_BODY, **overrides}
        if simulate is not None:
            body["simulate"] = simulate
        data = parse_order_request(json.dumps(body).encode(), simulation_enabled=True)
        order, _created = order_place(data=data)
        return order

    return place


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        "operator", "ops@example.com", "pw-for-tests", is_staff=True
    )


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client
