"""Thin django-q2 entry points: load by id, call a service."""

from __future__ import annotations

from django_q.tasks import async_task

from media_jobs import services


def run_job(job_id: int) -> None:
    """Run one job (idempotent: a duplicate delivery finds it claimed and returns)."""
    services.job_run(job_id=job_id)


def reconcile_jobs() -> dict:
    """Resume jobs whose worker died and re-enqueue lost ones (scheduled every minute)."""
    report = services.jobs_reconcile()
    return {"resumed": report.resumed, "requeued": report.requeued, "failed": report.failed}


def enqueue_run_job(job_id: int) -> None:
    """Queue a job run; duplicates are harmless because the run claims the job first."""
    async_task("media_jobs.tasks.run_job", job_id, group="jobs")


def cancel_remote(job_id: int) -> None:
    """Ask the provider to stop a cancelled job's remote work."""
    from media_jobs import tracking

    tracking.job_cancel_remote(job_id=job_id)


def enqueue_cancel_remote(job_id: int) -> None:
    async_task("media_jobs.tasks.cancel_remote", job_id, group="jobs")
