import json
import os
from pathlib import Path

from django.apps import AppConfig


class ReceiversConfig(AppConfig):
    name = "tests.e2e.receivers"
    label = "test_receivers"

    def ready(self):
        from orders.signals import order_completed

        order_completed.connect(tell_the_warehouse, dispatch_uid="tell_the_warehouse")


def tell_the_warehouse(sender, order, event, **kwargs):
    """Notes each call (its process, the order, the event) in a file, and
    raises on an order's first call, as a warehouse that is briefly down."""
    log = Path(os.environ["TEST_RECEIVER_LOG"])
    calls = log.read_text().splitlines() if log.exists() else []
    first = not any(json.loads(line)["order_id"] == order.order_id for line in calls)
    with log.open("a") as out:
        out.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "order_id": order.order_id,
                    "type": event["type"],
                    "status": order.status,
                }
            )
            + "\n"
        )
    if first:
        raise ConnectionError("the warehouse is down")
