import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

STOP_GRACE_SECONDS = 20


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
        # Each child gets its own session, so a terminal's Ctrl-C reaches only this
        # process; SIGTERM then goes to each child's main process alone (signalling
        # every qcluster process can hang it).
        children = {
            "web": self._spawn(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    host,
                    "-p",
                    str(port),
                    "orderproj.asgi:application",
                ]
            ),
            "workers": self._spawn([sys.executable, "manage.py", "qcluster"]),
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
        for process in children.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, process in children.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it")
                process.kill()
                process.wait()
        if exited:
            raise CommandError(
                f"the {exited} process exited with code "
                f"{children[exited].returncode}; stopped the rest"
            )
        self.stdout.write("stopped")

    @staticmethod
    def _spawn(command):
        return subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)
