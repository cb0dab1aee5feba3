from django.core.management.base import BaseCommand

from orders.dispatcher import sweep


class Command(BaseCommand):
    help = (
        "One sweep, as the dispatcher inside every qcluster does: hand due PENDING "
        "and RETRYING orders to the queue again and count PROCESSING orders past "
        "their lease as failed attempts."
    )

    def handle(self, *args, **options):
        result = sweep()
        self.stdout.write(
            f"Handed {len(result.dispatched)} order(s) to the queue again; "
            f"expired {len(result.expired)} lease(s)."
        )
        for order_id in result.expired:
            self.stdout.write(f"  lease expired: {order_id}")
        for order_id in result.dispatched:
            self.stdout.write(f"  dispatched:    {order_id}")
