"""Webhooks on PostgreSQL + Redis with two qclusters, each with its relay and
its senders: every event reaches the endpoint once, never from two senders at
once, in order per order."""

import json
from collections import Counter, defaultdict

import pytest

from tests.e2e.test_scale_out import scaled
from tests.e2e.test_webhooks_e2e import FAST_WEBHOOKS, endpoint, events_of
from tests.stack import wait_until
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


def test_two_clusters_deliver_each_event_once_and_in_order(tmp_path):
    with scaled(tmp_path, **FAST_WEBHOOKS) as stack:
        stack.start()
        stack.start_other_cluster()
        with Receiver(delay=0.2) as receiver, endpoint(stack, receiver.url):
            order_ids = [stack.place(fail_times=n % 2)["order_id"] for n in range(20)]
            for order_id in order_ids:
                stack.wait_for_terminal(order_id, timeout=60)
            expected = events_of(stack, order_ids)

            def every_event():
                got = [
                    json.loads(r.body)["data"]["event_id"] for r in receiver.received()
                ]
                return set(got) >= expected

            wait_until(every_event, timeout=60, what="every event at the receiver")
            requests = receiver.received()

    ids = Counter(r.headers["webhook-id"] for r in requests)
    assert [msg_id for msg_id, n in ids.items() if n > 1] == []
    assert len(ids) == len(expected)
    per_order = defaultdict(list)
    for request in requests:
        data = json.loads(request.body)["data"]
        per_order[data["order_id"]].append(data["event_id"])
    for event_ids in per_order.values():
        assert event_ids == sorted(event_ids)
