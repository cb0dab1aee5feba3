"""orders.state.notify: the writers tell the web processes of committed events, once per
transaction, after it commits."""

import asyncio
import threading

import pytest
from django.db import transaction

from orders.models import Order
from orders.state import notify
from orders.state.transitions import append_event, transition
from tests.factories import place

Status = Order.Status
IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def heard():
    """How many times this process's listeners were told, in order of commits."""
    calls = []
    stop = notify.listen(lambda: calls.append(1))
    yield calls
    stop()


@pytest.mark.django_db(transaction=True)
def test_a_transaction_that_writes_many_events_notifies_once_after_it_commits(heard):
    with transaction.atomic():
        order = place()
        transition(order, Status.PROCESSING)
        append_event(order, "delivery.completed", detail="by hand")
        transition(order, Status.COMPLETED)
        assert heard == []
    assert order.events.count() == 4
    assert heard == [1]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_notifies_nobody(heard):
    with pytest.raises(RuntimeError), transaction.atomic():
        order = place()
        transition(order, Status.PROCESSING)
        raise RuntimeError("rolled back")
    assert heard == []
    assert not Order.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_each_committed_transaction_notifies_once(heard):
    order = place()
    assert heard == [1]
    # Outside a caller's transaction each move commits on its own.
    transition(order, Status.PROCESSING)
    transition(order, Status.COMPLETED)
    assert heard == [1, 1, 1]


@pytest.mark.django_db(transaction=True)
def test_events_of_a_released_savepoint_notify_once_with_the_outer_ones(heard):
    with transaction.atomic():
        order = place()
        with transaction.atomic():
            transition(order, Status.PROCESSING)
        transition(order, Status.COMPLETED)
    assert heard == [1]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_savepoint_keeps_the_notice_of_the_writes_around_it(heard):
    """The notice registered inside a savepoint goes with it; the write after
    the rollback registers its own."""
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            place()
            raise RuntimeError("savepoint rolled back")
        place()
    assert heard == [1]
    assert Order.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_rollback_drops_the_notices_of_savepoints_released_inside_it(heard):
    """Written in savepoint B inside savepoint A, B released, A rolled back: the
    notice goes with A, and the outer transaction's own write notifies once."""
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            with transaction.atomic():
                place()
            raise RuntimeError("savepoint A rolled back")
        kept = place()
    assert heard == [1]
    assert list(Order.objects.values_list("pk", flat=True)) == [kept.pk]


@pytest.mark.django_db(transaction=True)
def test_with_a_channels_layer_each_commit_sends_one_group_message(settings):
    """The message goes out on the process's sender loop, without the writer
    waiting for it."""
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    sender = notify._sender()
    channel = _on(sender, sender.layer.new_channel())
    _on(sender, sender.layer.group_add(notify.EVENTS_GROUP, channel))
    try:
        with transaction.atomic():
            order = place()
            transition(order, Status.PROCESSING)
        assert _on(sender, sender.layer.receive(channel)) == notify.MESSAGE
        with pytest.raises(asyncio.TimeoutError):
            _on(sender, asyncio.wait_for(sender.layer.receive(channel), 0.2))
    finally:
        _on(sender, sender.layer.group_discard(notify.EVENTS_GROUP, channel))


@pytest.mark.django_db(transaction=True)
def test_the_sender_is_made_once_per_process(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    assert notify._sender() is notify._sender()
    assert notify._sender().thread.is_alive()


class HeldLayer:
    """A layer whose sends wait until released, or fail while Redis is down."""

    def __init__(self):
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.down = False

    async def group_send(self, group, message):
        self.started.release()
        await asyncio.to_thread(self.release.wait, 5)
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379.")


def test_commits_during_a_send_share_the_next_one():
    layer = HeldLayer()
    sender = notify._Sender(layer)
    sender.send()
    assert layer.started.acquire(timeout=5)
    for _ in range(5):
        sender.send()
    layer.release.set()
    assert layer.started.acquire(timeout=5)
    _on(sender, asyncio.sleep(0.05))
    assert _on(sender, _until(lambda: not sender._in_flight))
    assert sender.sent == 2


def test_a_failed_send_is_logged_and_the_next_commit_sends_again(caplog):
    layer = HeldLayer()
    layer.down = True
    layer.release.set()
    sender = notify._Sender(layer)
    sender.send()
    assert _on(sender, _until(lambda: not sender._in_flight))
    assert sender.sent == 0
    assert "could not tell the web processes about new events" in caplog.text
    assert "Error 111 connecting" in caplog.text
    layer.down = False
    sender.send()
    assert _on(sender, _until(lambda: sender.sent == 1))


async def _until(condition, deadline: float = 5.0) -> bool:
    async with asyncio.timeout(deadline):
        while not condition():
            await asyncio.sleep(0.005)
    return True


def _on(sender, coroutine, timeout: float = 5.0):
    return asyncio.run_coroutine_threadsafe(coroutine, sender.loop).result(timeout)
