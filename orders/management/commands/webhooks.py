from datetime import UTC

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orders.exceptions import (
    WebhookEndpointNotFound,
    WebhookInputError,
    WebhookTargetRefused,
)
from orders.selectors import webhook_endpoints_overview
from orders.services import webhooks as services


class Command(BaseCommand):
    help = (
        "Manage webhook endpoints: add one (its signing secret is printed on the "
        "last line, this once), list them, disable one, rotate its secret, or "
        "replay what it was sent since a time."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Add an endpoint; prints its secret.")
        add.add_argument("url")
        add.add_argument(
            "--events",
            default="",
            help="Comma-separated event types (default: every type).",
        )
        add.add_argument("--description", default="")
        actions.add_parser("list", help="List the endpoints.")
        disable = actions.add_parser("disable", help="Stop sending to an endpoint.")
        disable.add_argument("id")
        rotate = actions.add_parser(
            "rotate-secret",
            help="A new secret (printed on the last line); the old one signs too "
            "for WEBHOOK_SECRET_ROTATION_SECONDS.",
        )
        rotate.add_argument("id")
        replay = actions.add_parser(
            "replay", help="Send an endpoint every event it wants since a time."
        )
        replay.add_argument("id")
        replay.add_argument(
            "--since",
            required=True,
            help="ISO 8601 time, e.g. 2026-12-01T09:00 (UTC unless it says).",
        )

    def handle(self, *args, **options):
        action = options["action"]
        try:
            if action == "add":
                self._add(options)
            elif action == "list":
                self._list()
            elif action == "disable":
                if services.webhook_endpoint_disable(endpoint_id=options["id"]):
                    self.stdout.write(f"Endpoint {options['id']} disabled.")
                else:
                    self.stdout.write(f"Endpoint {options['id']} was disabled already.")
            elif action == "rotate-secret":
                endpoint, secret = services.webhook_endpoint_rotate_secret(
                    endpoint_id=options["id"]
                )
                self.stdout.write(
                    f"New secret for endpoint {endpoint.pk}; the old one signs too "
                    f"until {endpoint.previous_secret_expires_at.isoformat()}."
                )
                self.stdout.write(secret)
            elif action == "replay":
                since = _parse_time(options["since"])
                count = services.webhook_endpoint_replay(
                    endpoint_id=options["id"], since=since
                )
                self.stdout.write(
                    f"{count} message(s) since {since.isoformat()} will be sent to "
                    f"endpoint {options['id']}."
                )
        except (WebhookEndpointNotFound, WebhookInputError, WebhookTargetRefused) as e:
            raise CommandError(f"{str(e)[:1].upper()}{str(e)[1:]}.") from e

    def _add(self, options):
        endpoint, secret = services.webhook_endpoint_add(
            url=options["url"],
            event_types=options["events"].split(","),
            description=options["description"],
        )
        types = ", ".join(endpoint.event_types) or "every event type"
        self.stdout.write(f"Endpoint {endpoint.pk} added: {endpoint.url} ({types}).")
        self.stdout.write("Its signing secret, shown this once:")
        self.stdout.write(secret)

    def _list(self):
        endpoints = webhook_endpoints_overview()
        if not endpoints:
            self.stdout.write("No webhook endpoints.")
            return
        self.stdout.write(
            f"{'id':>4}  {'state':<8} {'pending':>7} {'sent':>6} {'failed':>6}  "
            "url  (event types)"
        )
        for endpoint in endpoints:
            state = "enabled" if endpoint.enabled else "disabled"
            types = ",".join(endpoint.event_types) or "all"
            self.stdout.write(
                f"{endpoint.pk:>4}  {state:<8} {endpoint.pending:>7} "
                f"{endpoint.delivered:>6} {endpoint.failed:>6}  {endpoint.url}  "
                f"({types})"
            )
            if not endpoint.enabled and endpoint.disabled_reason:
                self.stdout.write(f"      disabled: {endpoint.disabled_reason}")


def _parse_time(text: str):
    try:
        value = parse_datetime(text.strip())
    except ValueError:
        value = None
    if value is None:
        raise CommandError(
            f"--since {text!r} is not a time; write it as 2026-12-01T09:00 or "
            "2026-12-01T09:00:00+09:00."
        )
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
