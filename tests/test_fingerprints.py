"""What makes two failures one group: task, exception type and the innermost
frame of the project's own code, not the message."""

import traceback

from django.conf import settings

from orders.services.fingerprints import (
    failure_fingerprint,
    failure_location,
    is_project_path,
    traceback_frames,
)
from tests.factories import failure_traceback

SITE_PACKAGES = "/srv/venv/lib/python3.11/site-packages"


def fingerprint(task="orders.tasks.process_order", kind="KeyError", text=None):
    text = text if text is not None else failure_traceback()
    return failure_fingerprint(
        task=task, exception_type=kind, location=failure_location(text)
    )


def test_the_same_place_type_and_task_with_different_messages_is_one_group():
    first = failure_traceback(line="KeyError: 'card_token' for ord_1")
    second = failure_traceback(line="KeyError: 'card_token' for ord_2")

    assert fingerprint(text=first) == fingerprint(text=second)


def test_a_line_number_that_moved_is_still_the_same_place():
    moved = failure_traceback().replace("line 10,", "line 42,")

    assert fingerprint(text=moved) == fingerprint()


def test_a_different_innermost_project_frame_is_another_group():
    elsewhere = failure_traceback(function="order_retry")
    other_file = failure_traceback(where="orders/gateways.py")

    assert (
        len({fingerprint(), fingerprint(text=elsewhere), fingerprint(text=other_file)})
        == 3
    )


def test_another_task_or_exception_type_is_another_group():
    assert fingerprint(task="orders.tasks.other") != fingerprint()
    assert fingerprint(kind="ValueError") != fingerprint()


def test_frames_inside_django_django_q_and_site_packages_are_skipped():
    project, listener = settings.BASE_DIR, "order_delivery_completed"
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{SITE_PACKAGES}/django_q/worker.py", line 97, in worker\n'
        f'  File "{project}/orders/tasks.py", line 12, in {listener}\n'
        f'  File "{project}/orders/services/orders.py", line 642, in {listener}\n'
        f'  File "{SITE_PACKAGES}/django/db/models/manager.py", line 87, in get\n'
        f'  File "{SITE_PACKAGES}/django/db/models/query.py", line 633, in get\n'
        "orders.models.Order.DoesNotExist: Order matching query does not exist.\n"
    )

    assert (
        failure_location(text)
        == "orders/services/orders.py in order_delivery_completed"
    )


def test_the_standard_library_is_not_the_projects_code():
    import json

    assert not is_project_path(json.__file__)
    assert not is_project_path("<frozen runpy>")
    assert not is_project_path(f"{SITE_PACKAGES}/django_q/cluster.py")
    assert is_project_path(str(settings.BASE_DIR / "orders" / "services.py"))


def test_a_live_exceptions_traceback_names_the_function_that_raised():
    def parse_the_card():
        return {}["card_token"]

    try:
        parse_the_card()
    except KeyError as error:
        text = "".join(traceback.format_exception(error))

    assert failure_location(text) == "tests/test_fingerprints.py in parse_the_card"


def test_of_a_chained_traceback_the_exception_that_escaped_counts():
    first = failure_traceback(function="order_place", line="KeyError: 'x'")
    last = failure_traceback(function="order_process", line="ValueError: 'y'")
    chained = (
        first
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + last
    )

    assert failure_location(chained) == "orders/services/orders.py in order_process"
    assert len(traceback_frames(chained)) == 2


def test_without_a_project_frame_the_innermost_frame_is_the_place():
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{SITE_PACKAGES}/django_q/worker.py", line 97, in worker\n'
        '  File "/usr/lib/python3.11/json/decoder.py", line 355, in raw_decode\n'
        "json.decoder.JSONDecodeError: Expecting value\n"
    )

    assert failure_location(text) == "/usr/lib/python3.11/json/decoder.py in raw_decode"


def test_text_without_frames_has_no_place():
    assert failure_location("boom") == ""
