"""Run the web server, a task worker and the poll scheduler together; Ctrl-C stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

GRACE_SECONDS = 15


class Command(BaseCommand):
    help = "Serve the portal, a django-q2 worker and the poll scheduler until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--port", default=os.getenv("PORT", "8000"))
        parser.add_argument("--host", default=os.getenv("HOST", "127.0.0.1"))

    def handle(self, *args, port: str, host: str, **options):
        manage = [sys.executable, "manage.py"]
        # Callback URLs (webhooks, OAuth2, the sandbox providers) must name the port we serve on.
        os.environ.setdefault("SITE_URL", f"http://{host}:{port}")
        commands = [
            [*manage, "qcluster"],
            [*manage, "scheduler"],
            [*manage, "runserver", f"{host}:{port}", "--noreload"],
        ]
        # Each child leads its own process group: Ctrl-C reaches only us, and we stop each child
        # (and whatever it forked, like the cluster's workers) exactly once.
        procs = [subprocess.Popen(cmd, start_new_session=True) for cmd in commands]
        self.stdout.write(f"Portal on http://{host}:{port}/ with a worker. Ctrl-C stops all.")
        stopping = False

        def request_stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            while not stopping and all(p.poll() is None for p in procs):
                time.sleep(0.3)
        finally:
            shutdown(procs)


def shutdown(procs: list[subprocess.Popen]) -> None:
    """Ask every child group to stop (SIGTERM), then kill what is left after a grace period."""
    for p in procs:
        signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    for p in procs:
        signal_group(p, signal.SIGKILL)  # stragglers, and any grandchildren still running
        p.wait()


def signal_group(p: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)
