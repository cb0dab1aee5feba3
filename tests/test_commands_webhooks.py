"""`manage.py webhooks`: add, list, disable, rotate-secret, replay."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from orders.models import WebhookEndpoint
from tests.factories import processed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def private_networks_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True


def run(*args) -> str:
    out = StringIO()
    call_command("webhooks", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_add_prints_the_secret_on_its_last_line():
    output = run(
        "add",
        "http://127.0.0.1:9/hook",
        "--events",
        "order.completed,order.failed",
        "--description",
        "ERP",
    )

    endpoint = WebhookEndpoint.objects.get()
    assert output.splitlines()[-1] == endpoint.secret
    assert endpoint.event_types == ["order.completed", "order.failed"]
    assert endpoint.description == "ERP"


def test_list_shows_each_endpoint_without_its_secret():
    secret = run("add", "http://127.0.0.1:9/a").splitlines()[-1]
    run("add", "http://127.0.0.1:9/b", "--events", "order.failed")

    output = run("list")

    assert "http://127.0.0.1:9/a  (all)" in output
    assert "http://127.0.0.1:9/b  (order.failed)" in output
    assert secret not in output


def test_list_says_when_there_are_none():
    assert run("list").strip() == "No webhook endpoints."


def test_disable_then_list_shows_it_disabled():
    run("add", "http://127.0.0.1:9/a")
    endpoint = WebhookEndpoint.objects.get()

    assert "disabled" in run("disable", str(endpoint.pk))
    assert "disabled by an operator" in run("list")


def test_rotate_secret_prints_the_new_secret_on_its_last_line():
    old = run("add", "http://127.0.0.1:9/a").splitlines()[-1]
    endpoint = WebhookEndpoint.objects.get()

    new = run("rotate-secret", str(endpoint.pk)).splitlines()[-1]

    endpoint.refresh_from_db()
    assert new == endpoint.secret != old
    assert endpoint.previous_secret == old


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["add", "gopher://example.com/"],
            "The URL .gopher://.* is not http or https",
        ),
        (["add", "http://127.0.0.1:9/", "--events", "order.nope"], "Unknown event"),
        (["disable", "42"], "There is no webhook endpoint 42"),
        (["rotate-secret", "x"], "There is no webhook endpoint x"),
        (["replay", "1", "--since", "yesterday"], "is not a time"),
    ],
)
def test_bad_input_is_a_command_error_with_a_sentence(args, says):
    with pytest.raises(CommandError, match=says):
        run(*args)


def test_replay_queues_what_the_endpoint_never_got_since_the_time():
    order = processed()
    run("add", "http://127.0.0.1:9/a", "--events", "order.completed")
    endpoint = WebhookEndpoint.objects.get()

    output = run("replay", str(endpoint.pk), "--since", "2000-01-01T00:00")

    assert output.strip() == (
        f"1 message(s) since 2000-01-01T00:00:00+00:00 will be sent to endpoint "
        f"{endpoint.pk}."
    )
    [message] = endpoint.messages.all()
    assert (message.order, message.event_type) == (order, "order.completed")
