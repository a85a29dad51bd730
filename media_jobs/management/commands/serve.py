"""Run the web server, a task worker and the poll scheduler together; Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the portal and run a django-q2 worker side by side until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--port", default=os.getenv("PORT", "8000"))
        parser.add_argument("--host", default=os.getenv("HOST", "127.0.0.1"))

    def handle(self, *args, port: str, host: str, **options):
        manage = [sys.executable, "manage.py"]
        # Callback URLs (webhooks, OAuth2, the sandbox providers) must name the port we serve on.
        os.environ.setdefault("SITE_URL", f"http://{host}:{port}")
        procs = [
            subprocess.Popen([*manage, "qcluster"]),
            subprocess.Popen([*manage, "scheduler"]),
            subprocess.Popen([*manage, "runserver", f"{host}:{port}", "--noreload"]),
        ]
        self.stdout.write(f"Portal on http://{host}:{port}/ with a worker. Ctrl-C stops all.")

        def stop(*_):
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)

        signal.signal(signal.SIGTERM, stop)
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            stop()
            deadline = time.monotonic() + 15
            for p in procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
