from django.core.management.base import BaseCommand, CommandError

from orders import exceptions, selectors
from orders.services.deliveries import delivery_complete


class Command(BaseCommand):
    help = (
        "Complete a delivery by its code; the order's listener then records it "
        "asynchronously. Completing a completed delivery changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("code", help="The delivery code (dlv_…).")

    def handle(self, *args, **options):
        try:
            delivery, completed_now = delivery_complete(code=options["code"])
        except exceptions.DeliveryNotFound as exc:
            raise CommandError(str(exc)) from exc
        at = selectors.iso(delivery.completed_at)
        if completed_now:
            self.stdout.write(
                f"Delivery {delivery.code} completed at {at}; the listener of order "
                f"{delivery.order.order_id} records it next."
            )
        else:
            self.stdout.write(
                f"Delivery {delivery.code} was already completed at {at}; "
                "nothing changed."
            )
