"""The demo with SANDBOX_PROVIDERS: a job on every provider, from submit to downloadable files."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import User, Workspace
from accounts.services import api_key_create
from media_jobs.models import Job
from media_jobs.providers import PROVIDERS
from tests.remote import drive

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_the_demo_runs_a_job_on_each_provider_to_success(sandbox, media_root):
    call_command("demo", stdout=StringIO())
    ws = Workspace.objects.get(slug="demo")
    jobs = {job.provider: job for job in Job.objects.filter(workspace=ws)}
    assert set(jobs) == set(PROVIDERS)  # the built-in engine and the five remote services

    _, raw = api_key_create(workspace=ws, user=User.objects.get(email="demo@example.com"))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    for kind, job in jobs.items():
        finished = drive(job, timeout=180)
        assert finished.status == "success", f"{kind}: {finished.error}"
        body = api.get(f"/api/v1/jobs/{job.pk}").json()
        assert body["outputs"], kind
        for out in body["outputs"]:
            got = api.get(out["download_url"])
            assert got.status_code == 200, (kind, out["filename"])
            data = b"".join(got.streaming_content)
            assert len(data) == out["size"] > 0, (kind, out["filename"])
    # every remote emulator saw exactly one job created
    for kind in set(PROVIDERS) - {"local"}:
        assert sandbox.requests(kind, "POST"), kind
