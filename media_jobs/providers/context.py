"""What a remote adapter gets to work on one job: its account's client, input, state, callback."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from django.conf import settings
from django.urls import reverse

from media_jobs.downloads import storage_is_local
from media_jobs.models import Job
from media_jobs.providers.base import Provider
from media_jobs.providers.http import ProviderClient


class JobContext:
    """One job as its provider adapter sees it."""

    def __init__(self, job: Job, provider: Provider, workdir: Path, client: ProviderClient):
        self.job = job
        self.provider = provider
        self.workdir = workdir
        self.client = client

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @property
    def state(self) -> dict[str, Any]:
        return self.job.remote_state

    @property
    def remote_id(self) -> str:
        return self.job.remote_id

    def save_state(self, **updates: Any) -> None:
        """Remember intermediate ids at once, so a retried step resumes instead of redoing."""
        self.job.remote_state = {**self.job.remote_state, **updates}
        Job.objects.filter(pk=self.job.pk).update(remote_state=self.job.remote_state)

    def save_remote_id(self, remote_id: str) -> None:
        """Record the provider's job id before anything else can fail (submit exactly once)."""
        self.job.remote_id = str(remote_id)
        Job.objects.filter(pk=self.job.pk).update(remote_id=self.job.remote_id)

    @cached_property
    def input_path(self) -> Path:
        """Return a local copy of the job's input (streamed from storage once)."""
        from media_jobs.services import local_copy

        return local_copy(self.job.item.input_file, self.workdir)

    @property
    def input_name(self) -> str:
        return Path(self.job.item.input_file.name).name

    def input_url(self) -> str | None:
        """Return a presigned URL of the input on S3 (None on local disk: upload it instead)."""
        field = self.job.item.input_file
        if storage_is_local(field.storage):
            return None
        return field.storage.url(field.name, expire=settings.PROVIDER_INPUT_URL_SECONDS)

    @property
    def webhook_url(self) -> str:
        """Return this job's callback URL; the random token in it authenticates the caller."""
        path = reverse(
            "provider-webhook", args=[self.provider.kind, self.job.pk, self.job.webhook_token]
        )
        return settings.SITE_URL + path

    def output_path(self, filename: str) -> Path:
        """Return where a collected result file goes."""
        out = self.workdir / "out"
        out.mkdir(exist_ok=True)
        return out / Path(filename).name
