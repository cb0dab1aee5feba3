"""Webhooks from a real stack (daphne + qcluster, its relay thread sending) to a
receiver on 127.0.0.1 that refuses its first answers, then accepts."""

import json
from collections import defaultdict

import pytest
from standardwebhooks import Webhook

from tests.stack import make_stack, wait_until
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = make_stack(
        tmp_path_factory.mktemp("webhooks"),
        WEBHOOK_ALLOW_PRIVATE_NETWORKS="1",
        WEBHOOK_RETRY_SCHEDULE="0.5,0.5,1,1,2",
        WEBHOOK_TIMEOUT_SECONDS="3",
    ).start()
    yield running
    running.stop()


def add_endpoint(stack, url: str, *args: str) -> str:
    """The new endpoint's secret, from the last line `webhooks add` prints."""
    return stack.manage("webhooks", "add", url, *args).stdout.splitlines()[-1]


def events_of(stack, order_ids) -> set[int]:
    return {
        event["event_id"]
        for order_id in order_ids
        for event in stack.status(order_id)["events"]
    }


def test_a_receiver_refusing_at_first_gets_every_event_signed_and_in_order(stack):
    with Receiver(answers=[500, 503, 500, 502, 500]) as receiver:
        secret = add_endpoint(stack, receiver.url)
        order_ids = [stack.place(fail_times=n % 2)["order_id"] for n in range(6)]
        for order_id in order_ids:
            stack.wait_for_terminal(order_id)
        expected = events_of(stack, order_ids)

        def all_accepted():
            got = {json.loads(r.body)["data"]["event_id"] for r in receiver.accepted()}
            return got >= expected

        wait_until(all_accepted, timeout=60, what="every event accepted")
        requests = receiver.received()

    verifier = Webhook(secret)
    for request in requests:
        verifier.verify(request.body, request.headers)
    accepted = [r for r in requests if r.answered == 200]
    refused = [r for r in requests if r.answered != 200]
    assert len(refused) == 5
    accepted_ids = {r.headers["webhook-id"] for r in accepted}
    assert {r.headers["webhook-id"] for r in refused} <= accepted_ids
    by_id = {r.headers["webhook-id"]: r.body for r in accepted}
    assert all(by_id[r.headers["webhook-id"]] == r.body for r in refused)
    per_order = defaultdict(list)
    for request in accepted:
        data = json.loads(request.body)["data"]
        per_order[data["order_id"]].append(data["event_id"])
    assert set(per_order) == set(order_ids)
    for event_ids in per_order.values():
        assert event_ids == sorted(event_ids)
