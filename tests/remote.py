"""Support for remote-provider tests: the sandbox emulators on a live server, and a job driver."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings
from django.utils import timezone

from media_jobs import tracking
from media_jobs.models import Job
from media_jobs.sandbox.base import EMULATORS, Emulator, emulator


@dataclass
class Sandbox:
    """The emulators, served by pytest-django's live server in this process."""

    url: str

    def emulator(self, kind: str) -> Emulator:
        return emulator(kind)

    def control(self, kind: str, **knobs) -> dict:
        """Tell an emulator to misbehave (through its HTTP control endpoint)."""
        r = requests.post(f"{self.url}/sandbox/{kind}/_control", json=knobs, timeout=10)
        r.raise_for_status()
        return r.json()

    def requests(self, kind: str, method: str | None = None, path_contains: str = "") -> list:
        """Return the calls an emulator received, optionally filtered."""
        with emulator(kind).lock:
            calls = list(emulator(kind).requests)
        return [
            c
            for c in calls
            if (method is None or c["method"] == method) and path_contains in c["path"]
        ]


def start_sandbox(live_server_url: str, settings_fixture) -> Sandbox:
    """Point every provider at the emulators on the live server, with fresh emulator state."""
    settings_fixture.SANDBOX_PROVIDERS = True
    settings_fixture.SITE_URL = live_server_url
    settings_fixture.PROVIDER_BASE_URLS = {
        kind: f"{live_server_url}/sandbox/{path}" for kind, path in settings.SANDBOX_PATHS.items()
    }
    settings_fixture.AUPHONIC_CLIENT_ID = "sandbox-client"
    settings_fixture.AUPHONIC_CLIENT_SECRET = "sandbox-secret"
    for emu in EMULATORS.values():
        emu.reset()
    return Sandbox(live_server_url)


def drive(job: Job | int, *, timeout: float = 90, until=None) -> Job:
    """Run the scheduler's loop (polls as if due now) until the job ends or `until(job)` holds.

    Polls are queued through django-q2 (sync mode in tests), exactly as the scheduler does; the
    clock is moved forward so a test does not sit through the real backoff.
    """
    pk = job if isinstance(job, int) else job.pk
    deadline = time.monotonic() + timeout
    while True:
        current = Job.objects.get(pk=pk)
        if (until and until(current)) or (until is None and not current.is_active):
            return current
        if time.monotonic() > deadline:
            state = f"{current.status}/{current.stage}: {current.error}"
            raise AssertionError(f"job {pk} still {state}")
        if current.status == Job.Status.PENDING:
            from media_jobs import tasks

            tasks.run_job(pk)
        else:
            tracking.jobs_enqueue_due(now=timezone.now() + timedelta(hours=1))
        time.sleep(0.1)
