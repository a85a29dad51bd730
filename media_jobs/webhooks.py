"""Incoming provider webhooks: a per-job token authenticates them; they only trigger a re-poll."""

from __future__ import annotations

import secrets

from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from media_jobs import tracking
from media_jobs.models import Job


@csrf_exempt
@require_POST
def provider_webhook(request, kind: str, job_id: int, token: str):
    """Re-poll the job now; the payload is never trusted (Auphonic and Dolby don't sign it)."""
    job = Job.objects.filter(pk=job_id, provider=kind).first()
    if job is None or not secrets.compare_digest(job.webhook_token.encode(), token.encode()):
        raise Http404
    queued = tracking.job_poll_now(job=job)
    # Duplicates and late calls change nothing: the poll itself decides what happened.
    return JsonResponse({"ok": True, "queued": queued})
