"""Shared reads: what a request may see."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Max, QuerySet

from accounts.access import request_roles
from media_jobs.models import Dataset, Job, JobOutput, MediaItem, Preset, ProviderAccount
from media_jobs.services import presets_visible


def datasets_for(request) -> QuerySet[Dataset]:
    return Dataset.objects.filter(workspace_id__in=request_roles(request).keys()).select_related(
        "workspace", "default_preset"
    )


def items_for(request) -> QuerySet[MediaItem]:
    return MediaItem.objects.filter(
        dataset__workspace_id__in=request_roles(request).keys()
    ).select_related("dataset__workspace")


def presets_for(request) -> QuerySet[Preset]:
    return presets_visible(request_roles(request).keys()).select_related("workspace")


def jobs_for(request) -> QuerySet[Job]:
    return (
        Job.objects.filter(workspace_id__in=request_roles(request).keys())
        .select_related("item__dataset", "preset", "workspace")
        .prefetch_related("outputs")
    )


def outputs_for(request) -> QuerySet[JobOutput]:
    return JobOutput.objects.filter(
        job__workspace_id__in=request_roles(request).keys()
    ).select_related("job")


def largest_upload_limit(request) -> int:
    """Return the largest file any of the caller's datasets accepts."""
    largest = datasets_for(request).aggregate(m=Max("max_file_size"))["m"]
    return largest or settings.INTAKE_DEFAULT_MAX_FILE_SIZE


def provider_accounts_for(request) -> QuerySet[ProviderAccount]:
    return (
        ProviderAccount.objects.filter(workspace_id__in=request_roles(request).keys())
        .select_related("workspace")
        .order_by("provider", "pk")
    )
