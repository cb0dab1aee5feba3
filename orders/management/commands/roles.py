from django.core.management.base import BaseCommand

from orders.services.roles import roles_apply


class Command(BaseCommand):
    help = (
        'Create the operator roles as groups, "Support" (reads) and "Operators" '
        "(reads, retries, deliveries, failures), or set them back to exactly "
        "their permissions. Run after each migrate; safe to run again."
    )

    def handle(self, *args, **options):
        for change in roles_apply():
            if change.created:
                done = f"created with {len(change.added)} permissions"
            elif change.added or change.removed:
                done = "; ".join(
                    f"{verb} {', '.join(names)}"
                    for verb, names in (
                        ("added", change.added),
                        ("removed", change.removed),
                    )
                    if names
                )
            else:
                done = "as it should be"
            self.stdout.write(f"{change.group}: {done}.")
