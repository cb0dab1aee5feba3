"""The global failure handler: records, notifications and the django-q2 hook."""

import threading
import uuid
from datetime import timedelta
from decimal import Decimal
from multiprocessing import Value

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends import locmem
from django.db.models.signals import pre_save
from django.utils import timezone
from django_q.conf import Conf
from django_q.queues import Queue

from orderproj.settings import email_settings, env_addresses
from orders.models import FailureGroup, FailureRecord, Order
from orders.operations import mailer
from orders.operations.hooks import parse_task_result
from orders.services import attempts
from orders.services import orders as services
from orders.services.failure_actions import failure_group_resolve
from orders.services.failures import record_failure
from orders.services.inputs import LineInput, OrderInput
from tests.stack import free_port, wait_until

pytestmark = pytest.mark.django_db


class InventoryOutOfSync(Exception):
    pass


def exploding_task(order_id: str) -> None:
    raise InventoryOutOfSync(f"stock for {order_id} is negative")


def quiet_task(order_id: str) -> str:
    return "fine"


def recording_then_raising_task(order_id: str) -> None:
    error = InventoryOutOfSync("recorded by the task itself")
    record_failure(task="tests.test_failures.recording_then_raising_task", error=error)
    raise error


def run_in_worker(func, *args, timer=None, **kwargs) -> dict:
    """Run one task through django-q2's own worker loop in this process, exactly
    as a cluster's worker does (not its sync mode), then its result package
    through the monitor's loop, and return that package."""
    from django_q.monitor import monitor
    from django_q.worker import worker

    task_queue, result_queue = Queue(), Queue()
    task_queue.put(
        {
            "id": uuid.uuid4().hex,
            "name": "test-task",
            "func": func,
            "args": args,
            "kwargs": kwargs,
            "started": timezone.now(),
        }
    )
    task_queue.put("STOP")
    worker(task_queue, result_queue, timer or Value("f", -1))
    package = result_queue.get(timeout=5)
    monitored = Queue()
    monitored.put(package)
    monitored.put("STOP")
    monitor(monitored)
    return package


def held_elsewhere(timer) -> bool:
    """Whether the worker's timer lock is taken, as the sentinel's guard (another
    thread of control) would find it."""
    found = []

    def probe():
        lock = timer.get_lock()
        acquired = lock.acquire(block=False)
        if acquired:
            lock.release()
        found.append(not acquired)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return found[0]


class LockWatchingBackend(locmem.EmailBackend):
    """The test mail backend, telling the test when a mail is sent."""

    on_send = None

    def send_messages(self, messages):
        if LockWatchingBackend.on_send:
            LockWatchingBackend.on_send()
        return super().send_messages(messages)


@pytest.fixture
def keep_test_connection(monkeypatch):
    # A real worker and monitor close stale connections before each task and
    # result; here that would close the test's own transaction.
    monkeypatch.setattr("django_q.worker.close_old_django_connections", lambda: None)
    monkeypatch.setattr("django_q.monitor.close_old_django_connections", lambda: None)


@pytest.fixture
def order():
    return services.order_place(
        data=OrderInput(
            customer_email="buyer@example.com",
            lines=[LineInput(sku="MUG-1", quantity=1, unit_price=Decimal("5.00"))],
        )
    )[0]


def raised(error: BaseException) -> BaseException:
    """The error with a traceback, as if it had been raised."""
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001
        return caught


def test_record_failure_stores_every_detail_and_the_mailer_mails_the_admins(
    order, mailoutbox, settings
):
    settings.ADMINS = [("Ops", "ops@example.com")]
    record = record_failure(
        task="orders.tasks.process_order",
        args=[order.order_id],
        error=raised(InventoryOutOfSync("stock is negative")),
        order=order,
    )
    # Stored at once; the mail is the mailer's, later.
    assert mailoutbox == []
    assert FailureGroup.objects.get().mailed_at is None

    assert mailer.failures_mail_pending() == 1

    stored = FailureRecord.objects.get()
    assert stored == record
    assert stored.task == "orders.tasks.process_order"
    assert stored.args == [order.order_id]
    assert stored.exception_type == "tests.test_failures.InventoryOutOfSync"
    assert stored.message == "stock is negative"
    assert "Traceback (most recent call last)" in stored.traceback
    assert "InventoryOutOfSync: stock is negative" in stored.traceback
    assert stored.order == order
    assert stored.occurred_at is not None
    assert (stored.resolved, stored.resolved_by, stored.resolved_at) == (
        False,
        None,
        None,
    )
    assert stored.group.count == 1
    assert stored.group.mailed_at is not None
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["ops@example.com"]
    assert "orders.tasks.process_order failed" in mail.subject
    assert "InventoryOutOfSync" in mail.subject
    assert order.order_id in mail.body
    assert f"/admin/orders/failurerecord/{stored.pk}/change/" in mail.body
    assert f"/admin/orders/failuregroup/{stored.group.pk}/change/" in mail.body
    assert "Traceback (most recent call last)" in mail.body


def test_record_failure_never_raises_when_the_database_refuses(
    monkeypatch, mailoutbox, caplog
):
    def refuse(**fields):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(FailureRecord.objects, "create", refuse)

    result = record_failure(task="orders.tasks.x", error=raised(ValueError("boom")))

    assert result is None
    assert "could not store the failure" in caplog.text
    # The mail is then the only trace, so it still goes out (from a thread: the
    # caller does not wait for it).
    wait_until(lambda: mailoutbox, timeout=5, what="the unstored failure's mail")
    assert len(mailoutbox) == 1
    assert "not stored" in mailoutbox[0].body


def test_a_mail_that_fails_is_logged_and_not_sent_twice(monkeypatch, settings, caplog):
    # A mail server that refuses connections, for real.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    record = record_failure(task="orders.tasks.x", error=raised(ValueError("b")))

    assert mailer.failures_mail_pending() == 1
    assert mailer.failures_mail_pending() == 0

    assert FailureRecord.objects.filter(pk=record.pk).exists()
    assert "could not mail the admins" in caplog.text


def test_a_burst_of_identical_failures_is_one_group_one_mail_and_keeps_every_record(
    mailoutbox,
):
    for number in range(1000):
        record_failure(
            task="orders.tasks.process_order",
            error=raised(ConnectionError(f"gateway down ({number})")),
        )
    mailer.failures_mail_pending()
    mailer.failures_mail_pending()

    assert FailureRecord.objects.count() == 1000
    group = FailureGroup.objects.get()
    assert group.count == 1000
    assert group.mailed_count == 1000
    assert len(mailoutbox) == 1


def test_each_task_and_exception_type_is_a_group_of_its_own(mailoutbox):
    for task in ["orders.tasks.a", "orders.tasks.b"]:
        for error in [ValueError("x"), KeyError("y"), ValueError("z")]:
            record_failure(task=task, error=raised(error))
    mailer.failures_mail_pending()

    subjects = [mail.subject for mail in mailoutbox]
    assert len(subjects) == 4
    assert FailureGroup.objects.count() == 4
    for task in ["orders.tasks.a", "orders.tasks.b"]:
        for kind in ["ValueError", "KeyError"]:
            assert sum(f"{task} failed: {kind}" in s for s in subjects) == 1


def test_a_group_that_keeps_failing_sends_one_digest_per_window(mailoutbox, settings):
    settings.FAILURE_DIGEST_WINDOW_SECONDS = 60
    for _ in range(3):
        record_failure(task="orders.tasks.a", error=raised(ValueError("x")))
    mailer.failures_mail_pending()
    for _ in range(2):
        record_failure(task="orders.tasks.a", error=raised(ValueError("x")))
    # Within the window: nothing more.
    assert mailer.failures_mail_pending() == 0
    FailureGroup.objects.update(mailed_at=timezone.now() - timedelta(seconds=61))

    assert mailer.failures_mail_pending() == 1
    assert mailer.failures_mail_pending() == 0

    assert len(mailoutbox) == 2
    assert "orders.tasks.a: 2 more ValueError since" in mailoutbox[1].subject
    assert "2 more failure(s) of group" in mailoutbox[1].body
    assert FailureRecord.objects.count() == 5


def test_a_group_quiet_since_its_last_mail_sends_no_digest(mailoutbox, settings):
    settings.FAILURE_DIGEST_WINDOW_SECONDS = 60
    record_failure(task="orders.tasks.a", error=raised(ValueError("x")))
    mailer.failures_mail_pending()
    FailureGroup.objects.update(mailed_at=timezone.now() - timedelta(days=1))

    assert mailer.failures_mail_pending() == 0
    assert len(mailoutbox) == 1


def test_a_resolved_group_that_fails_again_reopens_and_mails_at_once(
    mailoutbox, settings
):
    settings.FAILURE_DIGEST_WINDOW_SECONDS = 3600
    first = record_failure(task="orders.tasks.a", error=raised(ValueError("x")))
    mailer.failures_mail_pending()
    failure_group_resolve(group=first.group)

    again = record_failure(task="orders.tasks.a", error=raised(ValueError("y")))
    mailer.failures_mail_pending()

    group = FailureGroup.objects.get()
    assert again.group == group
    assert (group.resolved, group.reopened_times, group.count) == (False, 1, 2)
    assert group.is_regression
    assert len(mailoutbox) == 2
    assert mailoutbox[1].subject.startswith(
        "[orderproj] Regression: orders.tasks.a failed again: ValueError: y"
    )
    assert "was resolved and has failed again" in mailoutbox[1].body


def test_an_exception_already_recorded_is_not_recorded_again():
    error = raised(ValueError("once"))

    first = record_failure(task="orders.tasks.a", error=error)
    second = record_failure(task="orders.tasks.a", error=error)

    assert first is not None
    assert second is None
    assert FailureRecord.objects.count() == 1


def test_a_task_raising_in_a_worker_is_recorded_by_the_django_q_hook(
    order, keep_test_connection, mailoutbox
):
    result = run_in_worker(
        "tests.test_failures.exploding_task", order_id=order.order_id
    )
    mailer.failures_mail_pending()

    assert result["success"] is False
    record = FailureRecord.objects.get()
    assert record.task == "tests.test_failures.exploding_task"
    assert record.kwargs == {"order_id": order.order_id}
    assert record.exception_type == "tests.test_failures.InventoryOutOfSync"
    assert record.message == f"stock for {order.order_id} is negative"
    assert "in exploding_task" in record.traceback
    assert record.order == order
    assert len(mailoutbox) == 1


@pytest.mark.django_db(transaction=True)
def test_the_hook_neither_writes_nor_mails_while_the_worker_holds_its_timer_lock(
    settings, mailoutbox
):
    """django-q2 sends post_execute_in_worker holding the worker's timer lock,
    which the sentinel's guard takes for every worker in turn: a slow database
    or SMTP server there would freeze the guard for the whole cluster."""
    settings.EMAIL_BACKEND = "tests.test_failures.LockWatchingBackend"
    timer = Value("f", -1)
    seen = []

    def on_record_saved(sender, **kwargs):
        seen.append(("record stored", held_elsewhere(timer)))

    LockWatchingBackend.on_send = lambda: seen.append(
        ("mail sent", held_elsewhere(timer))
    )
    pre_save.connect(on_record_saved, sender=FailureRecord, weak=False)
    try:
        run_in_worker("tests.test_failures.exploding_task", "ord_x", timer=timer)
        mailer.failures_mail_pending()
    finally:
        pre_save.disconnect(on_record_saved, sender=FailureRecord)
        LockWatchingBackend.on_send = None

    assert seen == [("record stored", False), ("mail sent", False)]
    assert FailureRecord.objects.get().exception_type.endswith("InventoryOutOfSync")


def test_a_task_passed_as_a_function_is_recorded_under_its_dotted_name(
    keep_test_connection,
):
    run_in_worker(exploding_task, "ord_unknown")

    record = FailureRecord.objects.get()
    assert record.task == "tests.test_failures.exploding_task"
    assert record.args == ["ord_unknown"]
    assert record.order is None


def test_a_task_that_succeeds_records_nothing(keep_test_connection):
    result = run_in_worker("tests.test_failures.quiet_task", "ord_x")

    assert result["success"] is True
    assert not FailureRecord.objects.exists()


def test_a_task_that_records_its_own_failure_and_raises_is_recorded_once(
    keep_test_connection,
):
    result = run_in_worker("tests.test_failures.recording_then_raising_task", "x")

    assert result["success"] is False
    assert FailureRecord.objects.count() == 1


def test_an_unexpected_step_error_is_recorded_once_and_the_order_retried(
    order, keep_test_connection, monkeypatch
):
    class BrokenStep:
        name = "payment"

        def run(self, order, *, attempt, idempotency_key):
            raise KeyError("card_token")

    monkeypatch.setattr(attempts, "order_steps", lambda: [BrokenStep()])

    result = run_in_worker("orders.tasks.process_order", order.order_id)

    # order_process_queued handles it (and records it); the task itself succeeds.
    assert result["success"] is True
    record = FailureRecord.objects.get()
    assert record.task == "orders.tasks.process_order"
    assert record.exception_type == "KeyError"
    assert record.order == order
    order.refresh_from_db()
    assert order.status == Order.Status.RETRYING


def test_in_sync_mode_the_hook_records_the_live_exception_once(monkeypatch):
    from django_q.tasks import async_task

    monkeypatch.setattr(Conf, "SYNC", True)
    with pytest.raises(InventoryOutOfSync):
        async_task("tests.test_failures.exploding_task", "ord_nope")

    record = FailureRecord.objects.get()
    assert record.exception_type == "tests.test_failures.InventoryOutOfSync"
    assert record.args == ["ord_nope"]


def test_the_task_result_text_is_parsed_into_type_message_and_traceback():
    traceback_text = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "    raise E\n"
        "orders.exceptions.Weird: a : b\nsecond line\n"
    )

    parsed = parse_task_result("a : b\nsecond line : " + traceback_text)

    assert parsed == ("orders.exceptions.Weird", "a : b\nsecond line", traceback_text)


def test_a_task_result_without_a_message_still_names_the_exception():
    traceback_text = (
        'Traceback (most recent call last):\n  File "x.py", line 1\nStopIteration\n'
    )

    assert parse_task_result(" : " + traceback_text)[:2] == ("StopIteration", "")


def test_admins_are_parsed_from_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("ADMINS", "Ana B <ana@example.com>, ops@example.com")

    assert env_addresses("ADMINS") == [
        ("Ana B", "ana@example.com"),
        ("ops@example.com", "ops@example.com"),
    ]


def test_email_url_selects_console_or_smtp_with_credentials():
    assert email_settings("console://")["EMAIL_BACKEND"].endswith(
        "console.EmailBackend"
    )
    smtp = email_settings("smtp://me%40x.org:s3cret@mail.example.com:2525")
    assert smtp["EMAIL_HOST"] == "mail.example.com"
    assert smtp["EMAIL_PORT"] == 2525
    assert smtp["EMAIL_HOST_USER"] == "me@x.org"
    assert smtp["EMAIL_HOST_PASSWORD"] == "s3cret"
    assert smtp["EMAIL_USE_TLS"] is True


def test_email_url_file_writes_each_mail_to_a_file_in_that_directory():
    assert email_settings("file:///var/tmp/mails") == {
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": "/var/tmp/mails",
    }
    with pytest.raises(ImproperlyConfigured, match="needs a directory path"):
        email_settings("file://")


def test_a_failure_record_and_its_mail_never_show_a_password_the_error_quoted(
    order, mailoutbox, settings
):
    settings.ADMINS = [("Ops", "ops@example.com")]
    record_failure(
        task="orders.tasks.process_order",
        args=[order.order_id],
        error=raised(
            ConnectionError(
                "could not connect to redis://:s3cret-pass@cache.internal:6379/0"
            )
        ),
        order=order,
    )

    stored = FailureRecord.objects.get()
    assert "s3cret-pass" not in stored.message + stored.traceback
    assert "cache.internal:6379" in stored.message
    assert mailer.failures_mail_pending() == 1

    (mail,) = mailoutbox
    assert "s3cret-pass" not in mail.subject
    assert "s3cret-pass" not in mail.body
    assert "cache.internal:6379" in mail.body
