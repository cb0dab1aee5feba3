from django.core.management.base import BaseCommand, CommandError

from orders import selectors
from orders.exceptions import InvalidTransition
from orders.models import Order
from orders.services import orders as services


class Command(BaseCommand):
    help = (
        "Send FAILED orders back to PENDING with their attempts reset (an "
        "operator's retry); the timeline keeps every earlier attempt."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--order", metavar="ORDER_ID", help="Retry this order.")
        which.add_argument(
            "--all", action="store_true", help="Retry every FAILED order."
        )

    def handle(self, *args, **options):
        if options["order"]:
            order = selectors.order_get(options["order"])
            if order is None:
                raise CommandError(f"No order with id {options['order']!r}.")
            try:
                services.order_retry(order=order)
            except InvalidTransition as exc:
                raise CommandError(
                    f"Order {order.order_id} is {order.status}; only FAILED orders "
                    "can be retried."
                ) from exc
            self.stdout.write(f"Order {order.order_id} is {order.status} again.")
            return
        retried = 0
        failed = Order.objects.filter(status=Order.Status.FAILED).order_by("pk")
        for order in failed.iterator():
            try:
                services.order_retry(order=order)
            except InvalidTransition:
                continue  # moved by someone else meanwhile
            retried += 1
        self.stdout.write(f"Retried {retried} FAILED order(s).")
