"""Queue polls of remote jobs as they fall due; no worker ever waits on a provider."""

from __future__ import annotations

import signal
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from media_jobs import tracking


class Command(BaseCommand):
    help = "Run the poll scheduler: queue a poll task for each remote job that is due."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between scans")
        parser.add_argument("--once", action="store_true", help="scan once and exit")

    def handle(self, *args, interval: float, once: bool, **options):
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while True:
            close_old_connections()
            queued = tracking.jobs_enqueue_due()
            if queued:
                self.stdout.write(f"queued polls: {queued}")
            if once or stopping:
                return
            time.sleep(interval)
