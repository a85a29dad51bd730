"""Remote-job tracking rules that hold for every provider: backoff, stall limit, due polls."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from media_jobs import tracking
from media_jobs.connections import account_create
from media_jobs.models import Job, MediaItem, Preset
from media_jobs.services import job_claim

pytestmark = pytest.mark.django_db


@pytest.fixture
def remote_job(acme) -> Job:
    """A submitted ApyHub job waiting for its next poll (no worker holds it)."""
    account = account_create(workspace=acme, provider="apyhub", credentials={"api_key": "k"})
    preset = Preset.objects.create(workspace=acme, slug="x", name="X", provider="apyhub")
    item = MediaItem.objects.create(dataset=acme.datasets.get(name="inbox"), duration=600)
    return Job.objects.create(
        workspace=acme,
        item=item,
        preset=preset,
        provider="apyhub",
        provider_account=account,
        status="running",
        stage="submitted",
        remote_id="r-1",
        remote_state={"submitted": True},
        next_poll_at=timezone.now() - timedelta(seconds=1),
    )


def test_polls_back_off_5_10_30_then_every_60_seconds(settings):
    assert [tracking.poll_delay(n) for n in range(6)] == [5, 10, 30, 60, 60, 60]


def test_retry_after_wins_when_longer():
    assert tracking.poll_delay(0, retry_after=120) == 120
    assert tracking.poll_delay(3, retry_after=2) == 60


def test_the_stall_limit_is_the_larger_of_10_minutes_and_4x_duration_plus_5(remote_job):
    assert tracking.stall_limit(remote_job) == timedelta(seconds=4 * 600 + 300)
    remote_job.item.duration = 30
    assert tracking.stall_limit(remote_job) == timedelta(minutes=10)


def test_a_due_job_is_queued_once(remote_job, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr("media_jobs.tasks.enqueue_run_job", queued.append)
    assert tracking.jobs_enqueue_due() == [remote_job.pk]
    assert tracking.jobs_enqueue_due() == []  # in flight: not queued again
    assert queued == [remote_job.pk]


def test_a_webhook_while_a_worker_holds_the_job_is_not_lost(remote_job, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr("media_jobs.tasks.enqueue_run_job", queued.append)
    job, token = job_claim(job_id=remote_job.pk)  # a poll is running
    assert tracking.job_poll_now(job=job) is False  # can't queue now: the job is held
    before = timezone.now()
    tracking.release(job, token, delay=30)
    job.refresh_from_db()
    assert job.next_poll_at <= before + timedelta(seconds=1)  # due at once, not in 30 s
    assert tracking.jobs_enqueue_due() == [job.pk]


def test_without_a_webhook_the_release_sets_the_backoff(remote_job):
    job, token = job_claim(job_id=remote_job.pk)
    tracking.release(job, token, delay=30)
    job.refresh_from_db()
    assert job.next_poll_at >= timezone.now() + timedelta(seconds=28)
    assert job.lease_expires_at is None


def test_a_poll_claim_does_not_count_as_an_attempt(remote_job):
    job, _ = job_claim(job_id=remote_job.pk)
    assert job.attempts == remote_job.attempts
