"""Remote jobs: submit once, poll when due (backing off), collect into storage, never wait."""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from media_jobs.connections import RECONNECT, account_client, account_disable
from media_jobs.models import Job, MediaItem
from media_jobs.providers import get_provider
from media_jobs.providers.base import (
    CANCELLED,
    FAILED,
    SUCCESS,
    JobCancelled,
    Provider,
    ProviderError,
    RemoteStatus,
)
from media_jobs.providers.context import JobContext

log = logging.getLogger(__name__)

# While a poll task is queued, the job's next poll moves this far out, so the scheduler
# does not queue it again; the task itself sets the real next time.
IN_FLIGHT = timedelta(minutes=2)
# A job that has not moved for this long fails (DESIGN: max(10 min, 4x duration + 5 min)).
MIN_STALL = timedelta(minutes=10)


def poll_delay(poll_count: int, retry_after: float | None = None) -> float:
    """Return seconds until the next poll: 5, 10, 30, then every 60, or what the provider asked."""
    steps = settings.PROVIDER_POLL_BACKOFF
    delay = float(steps[min(poll_count, len(steps) - 1)])
    return max(delay, retry_after or 0.0)


def stall_limit(job: Job) -> timedelta:
    """Return how long a remote job may go without progress before it is failed."""
    duration = job.item.duration or 0
    return max(MIN_STALL, timedelta(seconds=4 * duration + 300))


def release(job: Job, token: str, *, delay: float, **fields) -> bool:
    """Hand the job back (no worker holds it) with its next poll due after `delay` seconds."""
    now = timezone.now()
    due = now + timedelta(seconds=delay)
    return bool(
        Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_token=token).update(
            lease_expires_at=None,
            # A webhook that came while we held the job set next_poll_at to now: keep it.
            next_poll_at=Least(Coalesce(F("next_poll_at"), Value(due)), Value(due)),
            updated_at=now,
            **fields,
        )
    )


def job_advance(*, job: Job, token: str, provider: Provider) -> None:
    """Take a claimed remote job one step: submit it, or poll it and collect when done."""
    from media_jobs import services

    account = job.provider_account
    if account is None or account.disabled:
        reason = account.last_error if account else ""
        services.job_fail(
            job=job,
            token=token,
            message=f"No usable {provider.label} account: {reason or 'connect one'}. {RECONNECT}",
        )
        return
    with tempfile.TemporaryDirectory(prefix=f"job-{job.pk}-") as tmp:
        ctx = JobContext(job, provider, Path(tmp), account_client(account))
        try:
            if not job.remote_state.get("submitted"):
                submit(ctx, token)
                return
            status = provider.poll(ctx)
            if status.state == SUCCESS:
                collect(ctx, token)
            elif status.state in (FAILED, CANCELLED):
                message = status.message or f"{provider.label} reports the job {status.state}."
                services.job_fail(job=job, token=token, message=message)
            else:
                still_running(ctx, token, status)
        except JobCancelled:
            return
        except ProviderError as exc:
            handle_error(ctx, token, exc)


def submit(ctx: JobContext, token: str) -> None:
    """Submit the job (adapters resume from saved ids), then schedule its first poll."""
    from media_jobs.services import Heartbeat

    job = ctx.job
    MediaItem.objects.filter(pk=job.item_id).update(
        status=MediaItem.Status.PROCESSING, error="", updated_at=timezone.now()
    )
    with Heartbeat(job, token) as hb:
        hb.report(2, "uploading")
        hb.beat()
        remote_id = ctx.provider.submit(ctx)
    ctx.save_remote_id(remote_id)
    ctx.save_state(submitted=True)
    release(
        job,
        token,
        delay=poll_delay(0),
        stage="submitted",
        progress=5,
        progress_at=timezone.now(),
        poll_count=0,
        transient_errors=0,
    )


def still_running(ctx: JobContext, token: str, status: RemoteStatus) -> None:
    """Record a poll's news; fail a job that has stalled too long; schedule the next poll."""
    from media_jobs.services import job_fail

    job = ctx.job
    stage = (status.stage or "processing")[:30]
    progress = job.progress if status.progress is None else max(5, min(95, status.progress))
    moved = stage != job.stage or progress != job.progress
    now = timezone.now()
    last_move = now if moved else (job.progress_at or job.started_at or now)
    if now - last_move > stall_limit(job):
        job_fail(
            job=job,
            token=token,
            message=f"{ctx.provider.label} made no progress for {stall_limit(job)}; timed out.",
        )
        return
    release(
        job,
        token,
        delay=poll_delay(job.poll_count + 1),
        stage=stage,
        progress=progress,
        progress_at=last_move,
        poll_count=F("poll_count") + 1,
        transient_errors=0,
    )


def collect(ctx: JobContext, token: str) -> None:
    """Copy every result into our storage right away (links expire), then finish the job."""
    from media_jobs.services import Heartbeat, job_store_outputs, job_succeed

    job = ctx.job
    with Heartbeat(job, token) as hb:
        hb.report(96, "collecting")
        hb.beat()
        result = ctx.provider.collect(ctx)
        if hb.cancelled.is_set():
            raise JobCancelled
        job_store_outputs(job=job, outputs=result.outputs)
    job_succeed(job=job, token=token, statistics=result.statistics, transcript=result.transcript)


def handle_error(ctx: JobContext, token: str, exc: ProviderError) -> None:
    """Fail at once on a permanent error; back off and retry a transient one, up to a limit."""
    from media_jobs.services import job_fail

    job = ctx.job
    if exc.auth:
        account_disable(account=job.provider_account, reason=exc.message)
        job_fail(job=job, token=token, message=f"{exc.message} ({RECONNECT})")
        return
    if exc.permanent:
        job_fail(job=job, token=token, message=exc.message)
        return
    errors = job.transient_errors + 1
    if errors > settings.PROVIDER_TRANSIENT_LIMIT:
        job_fail(job=job, token=token, message=f"Gave up after {errors - 1} retries: {exc.message}")
        return
    log.info("job %s: transient provider error (%s), retry %s", job.pk, exc.message, errors)
    release(
        job,
        token,
        delay=poll_delay(errors, exc.retry_after),
        transient_errors=errors,
        error=exc.message[:500],
    )


def jobs_enqueue_due(now=None) -> list[int]:
    """Queue a poll for each remote job that is due; return their ids."""
    now = now or timezone.now()
    due = Job.objects.filter(status=Job.Status.RUNNING, next_poll_at__lte=now).values_list(
        "pk", flat=True
    )
    return [pk for pk in due if enqueue_if_due(pk, now)]


def job_poll_now(*, job: Job) -> bool:
    """Make a running job due for a poll at once (a provider webhook said something changed)."""
    now = timezone.now()
    if not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(next_poll_at=now):
        return False
    return enqueue_if_due(job.pk, now)


def enqueue_if_due(pk: int, now) -> bool:
    """Queue a poll of one job if it is due and no worker holds it."""
    from media_jobs import tasks

    free = Q(lease_expires_at=None) | Q(lease_expires_at__lt=now)
    if Job.objects.filter(free, pk=pk, next_poll_at__lte=now).update(next_poll_at=now + IN_FLIGHT):
        tasks.enqueue_run_job(pk)
        return True
    return False


def job_cancel_remote(*, job_id: int) -> None:
    """Ask the provider to stop a job we cancelled (best effort: ours is cancelled anyway)."""
    job = Job.objects.select_related("item", "provider_account").filter(pk=job_id).first()
    if job is None or not job.remote_id or job.provider_account is None:
        return
    provider = get_provider(job.provider)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = JobContext(job, provider, Path(tmp), account_client(job.provider_account))
        try:
            provider.cancel(ctx)
        except ProviderError as exc:
            log.warning("could not cancel job %s at %s: %s", job.pk, provider.label, exc.message)
