"""Datasets, items, presets, provider accounts, jobs and their outputs."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from encrypted_fields.fields import EncryptedJSONField

from accounts.models import Workspace
from media_jobs.formats import DEFAULT_DATASET_FORMATS
from media_jobs.providers import provider_choices


def _default_formats() -> list[str]:
    return list(DEFAULT_DATASET_FORMATS)


def _default_max_size() -> int:
    return settings.INTAKE_DEFAULT_MAX_FILE_SIZE


class Preset(models.Model):
    """A provider kind plus validated parameters; global when it has no workspace."""

    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.CASCADE, related_name="presets"
    )
    slug = models.SlugField(max_length=60)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    provider = models.CharField(max_length=30, choices=provider_choices(), default="local")
    params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["slug"], condition=Q(workspace=None), name="unique_global_preset_slug"
            ),
            models.UniqueConstraint(fields=["workspace", "slug"], name="unique_workspace_preset"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_global(self) -> bool:
        return self.workspace_id is None

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from media_jobs.providers import get_provider

        try:
            self.params = get_provider(self.provider).validate_params(self.params or {})
        except ValueError as exc:
            raise ValidationError({"params": str(exc)}) from exc


class Dataset(models.Model):
    """A collection of items with intake rules."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    allowed_formats = models.JSONField(default=_default_formats)
    max_file_size = models.PositiveBigIntegerField(
        default=_default_max_size, help_text="Largest accepted file, in bytes."
    )
    require_metadata = models.BooleanField(
        default=False, help_text="Reject items without both a title and a description."
    )
    default_preset = models.ForeignKey(
        Preset,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Process every new item with this preset.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="unique_dataset_name")
        ]

    def __str__(self) -> str:
        return self.name


def item_input_path(item: MediaItem, filename: str) -> str:
    return f"workspaces/{item.dataset.workspace_id}/items/{item.pk}/input/{filename}"


class MediaItem(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        PUBLISHED = "published"
        FAILED = "failed"

    class Source(models.TextChoices):
        UPLOAD = "upload"
        URL = "url"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    title = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UPLOAD)
    source_url = models.URLField(max_length=2000, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    input_file = models.FileField(upload_to=item_input_path, max_length=500, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    format_name = models.CharField(max_length=100, blank=True)
    duration = models.FloatField(null=True, blank=True)
    codec = models.CharField(max_length=50, blank=True)
    channels = models.PositiveSmallIntegerField(null=True, blank=True)
    sample_rate = models.PositiveIntegerField(null=True, blank=True)
    has_video = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    statistics = models.JSONField(default=dict, blank=True)
    transcript = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title or self.original_filename or f"item {self.pk}"

    @property
    def workspace_id(self) -> int:
        return self.dataset.workspace_id


class ProviderAccount(models.Model):
    """A workspace's account at a remote provider; credentials are encrypted at rest."""

    class AuthKind(models.TextChoices):
        API_KEY = "api_key"
        OAUTH2_CODE = "oauth2_code"
        OAUTH2_CLIENT_CREDENTIALS = "oauth2_client_credentials"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="provider_accounts"
    )
    provider = models.CharField(max_length=30, choices=provider_choices())
    label = models.CharField(max_length=100, blank=True)
    auth_kind = models.CharField(max_length=30, choices=AuthKind.choices, default=AuthKind.API_KEY)
    credentials = EncryptedJSONField(default=dict, blank=True)
    identity = models.CharField(
        max_length=200, blank=True, help_text="Who the provider says this account is."
    )
    token_expires_at = models.DateTimeField(null=True, blank=True)
    disabled = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.label or f"{self.provider} account"


class Job(models.Model):
    """One run of an item through a preset on a provider."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCESS = "success"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.PENDING, Status.RUNNING)

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="jobs")
    item = models.ForeignKey(MediaItem, on_delete=models.CASCADE, related_name="jobs")
    preset = models.ForeignKey(Preset, on_delete=models.PROTECT, related_name="jobs")
    provider = models.CharField(max_length=30, choices=provider_choices(), default="local")
    provider_account = models.ForeignKey(
        ProviderAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    overrides = models.JSONField(default=dict, blank=True)
    # The effective parameters, frozen at creation so a later preset edit can't change the job.
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    stage = models.CharField(max_length=30, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    remote_id = models.CharField(max_length=200, blank=True)
    # What a remote adapter must remember between steps (intermediate ids, result URLs).
    remote_state = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # A worker holding the job renews the lease; the token fences out a worker that lost it.
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    poll_count = models.PositiveIntegerField(default=0)
    transient_errors = models.PositiveIntegerField(default=0)
    progress_at = models.DateTimeField(
        null=True, blank=True, help_text="When the job last moved (progress or stage)."
    )
    webhook_token = models.CharField(max_length=64, default="", blank=True, editable=False)
    statistics = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"

    def save(self, *args, **kwargs):
        if not self.webhook_token:
            self.webhook_token = secrets.token_urlsafe(24)
        super().save(*args, **kwargs)

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def _finish(self, status: str, error: str = "", **extra) -> bool:
        """Move an active job to a final status; return False when it had already finished."""
        fields = {
            "status": status,
            "error": error,
            "finished_at": timezone.now(),
            "lease_expires_at": None,
            "next_poll_at": None,
            "updated_at": timezone.now(),
            **extra,
        }
        done = Job.objects.filter(pk=self.pk, status__in=self.ACTIVE).update(**fields)
        if done:
            for k, v in fields.items():
                setattr(self, k, v)
        return bool(done)

    def mark_success(self, statistics: dict) -> bool:
        return self._finish(self.Status.SUCCESS, progress=100, stage="done", statistics=statistics)

    def mark_failed(self, message: str) -> bool:
        return self._finish(self.Status.FAILED, message[:5000])

    def mark_cancelled(self) -> bool:
        return self._finish(self.Status.CANCELLED, stage="cancelled")


def job_output_path(output: JobOutput, filename: str) -> str:
    return f"workspaces/{output.job.workspace_id}/jobs/{output.job_id}/{filename}"


class JobOutput(models.Model):
    class Kind(models.TextChoices):
        MEDIA = "media"  # a processed audio or video file
        REPORT = "report"  # an analysis artifact, e.g. the waveform image

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outputs")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.MEDIA)
    format = models.CharField(max_length=20)
    filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=job_output_path, max_length=500)
    size = models.PositiveBigIntegerField(default=0)
    checksum = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the file")
    statistics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "filename"], name="one_output_per_filename")
        ]

    def __str__(self) -> str:
        return self.filename
