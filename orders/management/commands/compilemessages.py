from django.conf import settings
from django.core.management.base import BaseCommand

from orders.catalogs import catalogs, compile_catalog, is_stale


class Command(BaseCommand):
    help = (
        "Compile the translations (locale/*/LC_MESSAGES/*.po) into the .mo files "
        "Django reads. In pure Python (Babel): Django's own compilemessages, "
        "which this one stands in for, needs GNU gettext's msgfmt."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-stale",
            action="store_true",
            help="Compile only the catalogs whose .mo is missing or older.",
        )

    def handle(self, *args, if_stale=False, **options):
        for po in catalogs(settings.LOCALE_PATHS):
            if if_stale and not is_stale(po):
                continue
            mo = compile_catalog(po)
            if options["verbosity"] >= 1:
                self.stdout.write(f"compiled {mo.relative_to(settings.BASE_DIR)}")
