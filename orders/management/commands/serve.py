import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders.processes import cluster_command, spawn, stop, web_command


class Command(BaseCommand):
    help = (
        "Runs the whole service in the foreground: daphne (web) and a qcluster "
        "(workers and dispatcher). Ctrl-C or SIGTERM stops both cleanly."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.PORT)

    def handle(self, *args, host, port, **options):
        base = f"http://{host}:{port}"
        children = {
            "web": spawn(web_command(host, port)),
            "workers": spawn(cluster_command()),
        }
        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        self.stdout.write(
            f"orderproj is running (Ctrl-C stops it)\n"
            f"  storefront  {base}/\n"
            f"  dashboard   {base}/dashboard/\n"
            f"  admin       {base}/admin/\n"
            f"  API         {base}/api/orders\n"
            f"  health      {base}/healthz\n"
        )
        exited = None
        while not stopping and exited is None:
            time.sleep(0.2)
            exited = next(
                (name for name, p in children.items() if p.poll() is not None), None
            )
        # Both are told at once, then waited for (SIGTERM to each main process
        # only; see orders/processes.py).
        for process in children.values():
            if process.poll() is None:
                process.terminate()
        for process in children.values():
            stop(process)
        if exited:
            raise CommandError(
                f"the {exited} process exited with code "
                f"{children[exited].returncode}; stopped the rest"
            )
        self.stdout.write("stopped")
