"""Push on the scale-out configuration (PostgreSQL + Redis): the workers' commits
reach the streams of a web process through the channels layer, and polling takes
over when the layer cannot be reached.

The stack polls every 30 s (ORDER_STREAM_POLL_SECONDS and
ORDER_STREAM_PUSH_FALLBACK_SECONDS), far past each test's deadline: an order's
events reach a stream within it only if something else woke the pump."""

import httpx
import pytest

from orders.workers.processes import (
    free_port,
    spawn,
    stop,
    wait_until,
    web_command,
    web_env,
)
from tests.e2e.test_scale_out import scaled
from tests.e2e.test_streams_e2e import read_events
from tests.expected import CLEAN_RUN_EVENTS

pytestmark = [pytest.mark.e2e, pytest.mark.alone]

SLOW_POLL_SECONDS = 30
DEADLINE = 15.0
SLOW_POLL = {
    "ORDER_STREAM_POLL_SECONDS": str(SLOW_POLL_SECONDS),
    "ORDER_STREAM_PUSH_FALLBACK_SECONDS": str(SLOW_POLL_SECONDS),
}
# Long enough for the stream to be open before the worker writes most events.
SLOW_ORDER = {"delay_ms": 1500, "delay_step": "payment"}


@pytest.fixture(scope="module")
def pushing_stack(tmp_path_factory):
    with scaled(tmp_path_factory.mktemp("push"), **SLOW_POLL) as stack:
        yield stack.start()


def test_a_workers_events_reach_a_stream_on_the_web_process_through_push(
    pushing_stack,
):
    order_id = pushing_stack.place(**SLOW_ORDER)["order_id"]
    with pushing_stack.client() as client:
        found = read_events(client, f"/api/orders/{order_id}/events", within=DEADLINE)
    assert [kind for _id, kind, _data, _at in found] == CLEAN_RUN_EVENTS
    assert "event push: the channels layer failed" not in (
        pushing_stack.web_log.read_text()
    )


def test_with_its_layer_unreachable_a_web_process_streams_by_polling(
    pushing_stack, tmp_path
):
    """A second web process whose channels layer points at a closed port: its
    pump polls at ORDER_STREAM_POLL_SECONDS (here 0.2 s) instead of waiting for
    messages, and says so in its log; orders are placed on the first one."""
    port, closed = free_port(), free_port()
    env = {
        **pushing_stack.env,
        "REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        "ORDER_STREAM_POLL_SECONDS": "0.2",
    }
    log = tmp_path / "web-without-layer.log"
    web = spawn(web_command("127.0.0.1", port), env=web_env(env), log=log)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: _answers(base_url, web, log),
            timeout=30,
            what="the second daphne to answer",
        )
        order_id = pushing_stack.place(**SLOW_ORDER)["order_id"]
        with httpx.Client(base_url=base_url, timeout=10) as client:
            found = read_events(
                client, f"/api/orders/{order_id}/events", within=DEADLINE
            )
        assert [kind for _id, kind, _data, _at in found] == CLEAN_RUN_EVENTS
        text = log.read_text()
        assert "event push: the channels layer failed; polling every 0.2s" in text
        assert f"127.0.0.1:{closed}" in text
    finally:
        stop(web, timeout=15)


def _answers(base_url: str, web, log) -> bool:
    if web.poll() is not None:
        raise RuntimeError(f"daphne exited:\n{log.read_text()}")
    try:
        httpx.get(f"{base_url}/api/orders/ord_missing", timeout=5)
    except httpx.TransportError:
        return False
    return True
