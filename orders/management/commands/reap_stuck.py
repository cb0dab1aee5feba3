from django.core.management.base import BaseCommand

from orders.workers.dispatcher import sweep


class Command(BaseCommand):
    help = (
        "One sweep, as the dispatcher inside every qcluster does: hand due PENDING "
        "and RETRYING orders to the queue again, count PROCESSING orders past "
        "their lease as failed attempts, and re-send delivery listeners whose task "
        "was lost."
    )

    def handle(self, *args, **options):
        result = sweep()
        self.stdout.write(
            f"Handed {len(result.dispatched)} order(s) to the queue again; "
            f"expired {len(result.expired)} lease(s); re-sent "
            f"{len(result.listeners)} delivery listener(s)."
        )
        for order_id in result.expired:
            self.stdout.write(f"  lease expired: {order_id}")
        for order_id in result.dispatched:
            self.stdout.write(f"  dispatched:    {order_id}")
        for code in result.listeners:
            self.stdout.write(f"  listener:      {code}")
