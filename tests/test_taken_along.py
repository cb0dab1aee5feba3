"""The tasks a batch left with nothing to do: a worker that takes orders along
notes them, with the stamp their tasks carry, in memory the whole cluster
shares; their tasks are then dropped by the pusher or return at once, and a
task queued for any later attempt is never mistaken for one of them."""

import multiprocessing
import os
import signal
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from orders import tasks
from orders.models import Order, OrderEvent
from orders.services import orders as services
from orders.workers.djangoq import taken_along as takenalong
from orders.workers.djangoq.queues import ClusterQueue
from orders.workers.djangoq.sentinel import TakenAlongFilter
from tests.factories import event_types, process

fork = multiprocessing.get_context("fork")
Status = Order.Status


@pytest.fixture
def table():
    """A table installed in this process, as the sentinel installs one."""
    shared = takenalong.TakenAlong()
    takenalong.install(shared)
    yield shared
    takenalong.install(None)


def task_stamp(order: Order) -> int:
    """The stamp of the task order_enqueue() queues for the order as it is now."""
    order.refresh_from_db()
    return services.task_stamp(order.queued_at)


def test_a_stamp_is_the_queued_time_in_whole_microseconds():
    moment = timezone.now().replace(microsecond=123457)
    assert services.task_stamp(moment) % 1_000_000 == 123457
    assert services.task_stamp(moment + timedelta(microseconds=1)) == (
        services.task_stamp(moment) + 1
    )


def test_a_note_matches_its_order_and_stamp_only():
    table = takenalong.TakenAlong(slots=64)
    table.note([("ord_a", 1000)])
    assert table.holds("ord_a", 1000)
    assert not table.holds("ord_a", 1001)
    assert not table.holds("ord_b", 1000)


def test_a_later_note_in_the_same_slot_replaces_the_earlier_one():
    table = takenalong.TakenAlong(slots=1)
    table.note([("ord_a", 1000), ("ord_b", 2000)])
    assert table.holds("ord_b", 2000)
    assert not table.holds("ord_a", 1000)


def test_ids_too_long_for_a_slot_and_zero_stamps_are_never_noted():
    table = takenalong.TakenAlong(slots=64)
    long_id = "o" * (takenalong.ID_BYTES + 1)
    table.note([(long_id, 1000), ("ord_a", 0)])
    assert not table.holds(long_id, 1000)
    assert not table.holds("ord_a", 0)


def note_and_exit(table, order_id, order_stamp):
    table.note([(order_id, order_stamp)])


def note_then_die_holding_the_lock(table, order_id, order_stamp):
    table._lock.acquire()
    slot = table._slot(order_id.encode())
    # The first half of a note: the stamp cleared, the id half written.
    table._stamps[slot] = 0
    table._ids[slot * takenalong.ID_BYTES] = order_id.encode()[:1]
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_note_written_by_one_process_is_seen_by_the_others_forked_with_it():
    table = takenalong.TakenAlong()
    child = fork.Process(target=note_and_exit, args=(table, "ord_a", 1000))
    child.start()
    child.join(timeout=10)
    assert child.exitcode == 0
    assert table.holds("ord_a", 1000)


def test_a_worker_killed_in_the_middle_of_a_note_leaves_no_match_and_no_lock():
    table = takenalong.TakenAlong(slots=1)
    table.note([("ord_a", 1000)])
    child = fork.Process(
        target=note_then_die_holding_the_lock, args=(table, "ord_b", 2000)
    )
    child.start()
    child.join(timeout=10)
    assert child.exitcode == -signal.SIGKILL
    # The kernel released the lock with the process; the half note matches
    # neither the order it replaced nor the one it was for.
    assert not table.holds("ord_a", 1000)
    assert not table.holds("ord_b", 2000)
    table.note([("ord_b", 2000)])
    assert table.holds("ord_b", 2000)


@pytest.mark.django_db
def test_the_tasks_of_orders_a_batch_took_along_return_without_a_query(
    table, place_order, django_capture_on_commit_callbacks, django_assert_num_queries
):
    asked, *behind = [place_order() for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        process(asked.order_id, companions=2)
    for order in behind:
        order_stamp = task_stamp(order)
        with django_assert_num_queries(0):
            returned = tasks.process_order(order.order_id, order_stamp)
        assert returned is None
        assert Order.objects.get(pk=order.pk).status == Status.COMPLETED
    # The batch's own task was not taken along: it is no note.
    assert not table.holds(asked.order_id, task_stamp(asked))


@pytest.mark.django_db
def test_a_task_with_another_stamp_claims_as_usual(
    table, place_order, django_capture_on_commit_callbacks
):
    """A task queued for the same order at another time (the dispatcher's, an
    operator's) is not the one the batch made redundant: it asks the database,
    which finds the order finished."""
    asked, behind = place_order(), place_order()
    with django_capture_on_commit_callbacks(execute=True):
        process(asked.order_id, companions=1)
    returned = tasks.process_order(behind.order_id, task_stamp(behind) + 1)
    assert returned == Status.COMPLETED
    assert Order.objects.get(pk=behind.pk).attempts == 1


@pytest.mark.django_db
def test_an_operators_retry_runs_its_new_task_though_its_first_was_noted(
    table, place_order
):
    """A note outlives its attempt; the retry's task carries the retry's stamp."""
    order = place_order(simulate={"fail_times": 1, "failure": "permanent"})
    first_stamp = task_stamp(order)
    process(order.order_id)
    # As if a batch had taken the order along for that first attempt.
    table.note([(order.order_id, first_stamp)])
    order.refresh_from_db()
    assert order.status == Status.FAILED
    services.order_retry(order=order)
    retry_stamp = task_stamp(order)
    assert retry_stamp != first_stamp
    returned = tasks.process_order(order.order_id, retry_stamp)
    # The retry's attempt ran (and met the same permanent failure: the plan
    # fails every first attempt).
    assert returned == Status.FAILED
    assert Order.objects.get(pk=order.pk).attempts == 1
    assert event_types(order).count(OrderEvent.Type.PROCESSING) == 2


@pytest.mark.django_db
def test_the_pusher_acknowledges_a_taken_along_task_instead_of_handing_it_on(table):
    """With the embedded (ORM) broker, acknowledging deletes the task's row."""
    broker = ORM(list_key="taken-along-test")
    stamp = 1_700_000_000_000_000
    table.note([("ord_taken", stamp)])
    queue = ClusterQueue(name="task")
    pushed = TakenAlongFilter(queue, broker)
    for order_id in ("ord_taken", "ord_waiting"):
        broker.enqueue(
            SignedPackage.dumps(
                {
                    "id": f"task-{order_id}",
                    "func": services.PROCESS_ORDER_TASK,
                    "args": (order_id, stamp),
                    "kwargs": {},
                }
            )
        )
    for ack_id, package in broker.dequeue() + broker.dequeue():
        task = SignedPackage.loads(package)
        task["ack_id"] = ack_id
        pushed.put(task)
    handed_on = queue.get(timeout=5)
    assert handed_on["args"] == ("ord_waiting", stamp)
    assert queue.qsize() == 0
    # The dropped task is gone from the broker; the other waits for its ack.
    assert list(OrmQ.objects.values_list("key", flat=True)) == [broker.list_key]


def test_only_an_order_task_with_a_noted_stamp_is_taken_along(table):
    table.note([("ord_a", 1000)])
    order_task = {"func": services.PROCESS_ORDER_TASK, "kwargs": {}}
    assert takenalong.task_was_taken_along({**order_task, "args": ("ord_a", 1000)})
    for args in [("ord_a",), ("ord_a", None), ("ord_a", 1001), ("ord_a", 1000, 1)]:
        assert not takenalong.task_was_taken_along({**order_task, "args": args})
    other = {"func": "orders.tasks.order_delivery_completed", "kwargs": {}}
    assert not takenalong.task_was_taken_along({**other, "args": ("ord_a", 1000)})
