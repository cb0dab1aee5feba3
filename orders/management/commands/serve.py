import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders.workers.processes import (
    cluster_command,
    cluster_env,
    spawn,
    stop_all,
    web_command,
    web_env,
)


class Command(BaseCommand):
    help = (
        "Runs the whole service in the foreground: daphne (web) and a qcluster "
        "(workers and dispatcher). Ctrl-C or SIGTERM stops both cleanly."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument(
            "--only",
            choices=["web", "workers"],
            help=(
                "Run one of the two (the Procfile's worker line: a Procfile runner "
                "signals a whole process group, and a qcluster must get SIGTERM "
                "to its main process only, which this command sends)."
            ),
        )

    def handle(self, *args, host, port, only=None, **options):
        base = f"http://{host}:{port}"
        commands = {
            "web": (web_command(host, port), web_env()),
            "workers": (cluster_command(), cluster_env()),
        }
        children = {
            name: spawn(command, env=env)
            for name, (command, env) in commands.items()
            if only in (None, name)
        }
        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        urls = (
            f"  storefront  {base}/\n"
            f"  dashboard   {base}/dashboard/\n"
            f"  admin       {base}/admin/\n"
            f"  API         {base}/api/orders\n"
            f"  health      {base}/healthz\n"
        )
        self.stdout.write(
            f"orderproj {only or ''} is running (Ctrl-C stops it)\n".replace("  ", " ")
            + ("" if only == "workers" else urls)
        )
        exited = None
        while not stopping and exited is None:
            time.sleep(0.2)
            exited = next(
                (name for name, p in children.items() if p.poll() is not None), None
            )
        # Both are told at once, then waited for (one SIGTERM to each main
        # process only; see orders/workers/processes.py).
        stop_all(list(children.values()))
        if exited:
            raise CommandError(
                f"the {exited} process exited with code "
                f"{children[exited].returncode}; stopped the rest"
            )
        self.stdout.write("stopped")
