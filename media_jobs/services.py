"""Workflows that touch several models, storage or the network: intake, jobs, reconciliation."""

from __future__ import annotations

import copy
import logging
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.files import File
from django.db import close_old_connections, connection, transaction
from django.db.models import Case, CharField, F, PositiveIntegerField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Workspace
from media_jobs import engine, netsafe
from media_jobs.formats import allowed_for_detected, detected_matches, extension_of
from media_jobs.models import Dataset, Job, JobOutput, MediaItem, Preset
from media_jobs.providers import get_provider
from media_jobs.providers.base import JobCancelled, ProviderError

log = logging.getLogger(__name__)

# Simple-API fields that are Auphonic algorithm names; everything else is metadata or ours.
ALGORITHM_FIELDS = {
    "filtering": bool,
    "hipfilter": bool,  # older Auphonic name for filtering
    "normloudness": bool,
    "loudnesstarget": float,
    "maxpeak": float,
    "leveler": bool,
    "denoise": bool,
    "denoiseamount": float,
}
METADATA_FIELDS = [
    "title", "artist", "album", "track", "subtitle", "summary", "genre", "year",
    "publisher", "url", "license", "license_url", "tags",
]  # fmt: skip


class IntakeError(Exception):
    """Input refused at intake; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400, item: MediaItem | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.item = item


# --- presets -------------------------------------------------------------------------------


def presets_visible(workspace_ids) -> Any:
    """Return the presets a set of workspaces may use: theirs and the global ones."""
    return Preset.objects.filter(Q(workspace=None) | Q(workspace_id__in=list(workspace_ids)))


def preset_resolve(*, workspace: Workspace, ref: str | int) -> Preset | None:
    """Return the preset named by id or slug, preferring the workspace's own over a global one."""
    visible = presets_visible([workspace.pk])
    ref = str(ref).strip()
    if ref.isdigit():
        return visible.filter(pk=int(ref)).first()
    return visible.filter(slug=ref).order_by(F("workspace").asc(nulls_last=True)).first()


def dataset_resolve(*, workspace: Workspace, ref: str | int) -> Dataset | None:
    """Return the workspace's dataset named by id or name."""
    ref = str(ref).strip()
    if ref.isdigit():
        return workspace.datasets.filter(pk=int(ref)).first()
    return workspace.datasets.filter(name=ref).first()


# --- intake --------------------------------------------------------------------------------


def check_size_header(*, dataset: Dataset, content_length: int | None) -> None:
    """Refuse a request whose declared body is far larger than the dataset accepts."""
    # Multipart framing adds a little; anything beyond a generous allowance can't fit.
    if content_length and content_length > dataset.max_file_size + 1024 * 1024:
        raise IntakeError(too_large_message(dataset), status=413)


def too_large_message(dataset: Dataset) -> str:
    return f"File exceeds this dataset's limit of {dataset.max_file_size} bytes."


def check_metadata(*, dataset: Dataset, title: str, description: str) -> None:
    if dataset.require_metadata and not (title.strip() and description.strip()):
        raise IntakeError("This dataset requires both a title and a description.", status=400)


def check_extension(*, dataset: Dataset, filename: str, required: bool = True) -> str:
    """Return the file's extension, refusing one outside the dataset's list (415)."""
    ext = extension_of(filename)
    if not ext and not required:
        return ""
    if ext not in dataset.allowed_formats:
        allowed = ", ".join(dataset.allowed_formats)
        shown = f".{ext}" if ext else "a file without an extension"
        raise IntakeError(
            f"Format {shown} is not accepted by this dataset (allowed: {allowed}).", status=415
        )
    return ext


def item_create_from_path(
    *,
    dataset: Dataset,
    path: Path,
    filename: str,
    title: str = "",
    description: str = "",
    metadata: dict | None = None,
    user=None,
    source: str = MediaItem.Source.UPLOAD,
    source_url: str = "",
    auto_process: bool = True,
) -> MediaItem:
    """Probe a local file, store it as a new item, and start the dataset's default preset."""
    check_metadata(dataset=dataset, title=title, description=description)
    ext = check_extension(dataset=dataset, filename=filename, required=source != "url")
    size = path.stat().st_size
    if size > dataset.max_file_size:
        raise IntakeError(too_large_message(dataset), status=413)
    fields = {
        "dataset": dataset,
        "title": title.strip() or Path(filename).stem or filename,
        "description": description,
        "metadata": metadata or {},
        "source": source,
        "source_url": source_url,
        "original_filename": filename,
        "size": size,
        "created_by": user,
    }
    try:
        facts = engine.probe(path)
    except engine.EngineError as exc:
        # Keep a record of the attempt, but nothing in storage.
        item = MediaItem.objects.create(status=MediaItem.Status.FAILED, error=str(exc), **fields)
        raise IntakeError(str(exc), status=422, item=item) from exc
    ok = detected_matches(ext, facts.format_name) if ext else True
    if not ok or not allowed_for_detected(facts.format_name, dataset.allowed_formats):
        raise IntakeError(
            f"The file's content ({facts.format_name}) is not an accepted format "
            f"for a .{ext or '?'} file in this dataset.",
            status=415,
        )
    with transaction.atomic():
        item = MediaItem.objects.create(
            format_name=facts.format_name,
            duration=facts.duration,
            codec=facts.audio_codec or "",
            channels=facts.channels,
            sample_rate=facts.sample_rate,
            has_video=facts.has_video,
            **fields,
        )
        with path.open("rb") as fh:
            item.input_file.save(safe_filename(filename, ext), File(fh), save=False)
        try:
            item.save(update_fields=["input_file"])
        except Exception:
            item.input_file.delete(save=False)
            raise
        if auto_process and dataset.default_preset_id:
            job_create(item=item, preset=dataset.default_preset, user=user)
    return item


def safe_filename(filename: str, ext: str) -> str:
    """Return a storage-safe file name that keeps the extension."""
    from django.utils.text import get_valid_filename

    stem = get_valid_filename(Path(filename).stem)[:100] or "input"
    return f"{stem}.{ext}" if ext else stem


def item_create_from_upload(*, dataset: Dataset, upload, **kwargs) -> MediaItem:
    """Store an uploaded file (already spooled by Django) as a new item."""
    if upload is None:
        raise IntakeError("Send the media file in the `audio` field.", status=400)
    filename = Path(upload.name or "upload").name
    check_metadata(
        dataset=dataset, title=kwargs.get("title", ""), description=kwargs.get("description", "")
    )
    check_extension(dataset=dataset, filename=filename)
    if upload.size is not None and upload.size > dataset.max_file_size:
        raise IntakeError(too_large_message(dataset), status=413)
    if hasattr(upload, "temporary_file_path"):
        return item_create_from_path(
            dataset=dataset, path=Path(upload.temporary_file_path()), filename=filename, **kwargs
        )
    with tempfile.NamedTemporaryFile(suffix=Path(filename).suffix) as tmp:
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        return item_create_from_path(
            dataset=dataset, path=Path(tmp.name), filename=filename, **kwargs
        )


def item_create_from_url(*, dataset: Dataset, url: str, **kwargs) -> MediaItem:
    """Fetch a public https URL (SSRF-guarded) and store it as a new item."""
    url = (url or "").strip()
    if not url:
        raise IntakeError("Send `audio_url`.", status=400)
    path_name = Path(urlsplit(url).path).name
    check_metadata(
        dataset=dataset, title=kwargs.get("title", ""), description=kwargs.get("description", "")
    )
    check_extension(dataset=dataset, filename=path_name, required=False)
    with tempfile.NamedTemporaryFile(suffix=Path(path_name).suffix) as tmp:
        try:
            result = netsafe.fetch_to_file(url, tmp, max_bytes=dataset.max_file_size)
        except netsafe.FetchError as exc:
            status = exc.status_code
            message = too_large_message(dataset) if status == 413 else exc.reason
            raise IntakeError(f"Could not fetch the URL: {message}", status=status) from exc
        tmp.flush()
        filename = path_name if extension_of(path_name) else (result.filename or "download")
        return item_create_from_path(
            dataset=dataset,
            path=Path(tmp.name),
            filename=filename,
            source=MediaItem.Source.URL,
            source_url=url,
            **kwargs,
        )


# --- jobs ----------------------------------------------------------------------------------


def split_simple_fields(data: dict[str, Any]) -> tuple[dict, dict]:
    """Split Simple-API form fields into (algorithm overrides, metadata)."""
    algorithms: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, cast in ALGORITHM_FIELDS.items():
        if key in data and data[key] not in ("", None):
            algorithms[key] = parse_value(key, data[key], cast)
    for key in METADATA_FIELDS:
        if data.get(key) not in ("", None):
            metadata[key] = data[key]
    if "hipfilter" in algorithms:
        algorithms.setdefault("filtering", algorithms.pop("hipfilter"))
    return algorithms, metadata


def parse_value(key: str, value: Any, cast: type) -> Any:
    if cast is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key}: expected true or false, not {value!r}")
    try:
        return cast(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key}: expected a number, not {value!r}") from exc


def effective_params(preset: Preset, overrides: dict[str, Any]) -> dict[str, Any]:
    """Return the preset's parameters with the job's overrides applied, validated."""
    params = copy.deepcopy(preset.params or {})
    for key, value in overrides.items():
        # Sections (algorithms, metadata, ...) merge key by key; anything else replaces.
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key].update(value)
        elif value not in (None, "", [], {}):
            params[key] = value
    return get_provider(preset.provider).validate_params(params)


def account_for(*, workspace_id: int, provider: str, account=None):
    """Return the provider account a job runs on: the one given, or the workspace's first usable."""
    from media_jobs.models import ProviderAccount

    if get_provider(provider).inline:
        return None
    if account is not None:
        if account.workspace_id != workspace_id or account.provider != provider:
            raise ValueError("That provider account belongs elsewhere.")
    else:
        account = (
            ProviderAccount.objects.filter(workspace_id=workspace_id, provider=provider)
            .order_by("disabled", "pk")
            .first()
        )
    label = get_provider(provider).label
    if account is None:
        raise ValueError(f"Connect a {label} account to this workspace first.")
    if account.disabled:
        raise ValueError(f"The {label} account is disabled ({account.last_error}); reconnect it.")
    return account


def job_create(
    *,
    item: MediaItem,
    preset: Preset,
    overrides: dict[str, Any] | None = None,
    user=None,
    start: bool = True,
    account=None,
) -> Job:
    """Create a job for an item and enqueue it once the transaction commits."""
    overrides = overrides or {}
    params = effective_params(preset, overrides)
    account = account_for(
        workspace_id=item.dataset.workspace_id, provider=preset.provider, account=account
    )
    job = Job.objects.create(
        provider_account=account,
        workspace_id=item.dataset.workspace_id,
        item=item,
        preset=preset,
        provider=preset.provider,
        overrides=overrides,
        params=params,
        created_by=user,
        stage="queued" if start else "saved",
    )
    if start:
        job_enqueue(job=job)
    return job


def job_enqueue(*, job: Job) -> None:
    """Hand the job to a worker after the surrounding transaction commits."""
    from media_jobs import tasks

    transaction.on_commit(lambda: tasks.enqueue_run_job(job.pk))


def job_start(*, job: Job) -> Job:
    """Start a saved job (Simple API `action=save`)."""
    if job.status == Job.Status.PENDING and job.stage == "saved":
        Job.objects.filter(pk=job.pk, stage="saved").update(stage="queued")
        job.stage = "queued"
        job_enqueue(job=job)
    return job


def job_cancel(*, job: Job) -> bool:
    """Cancel a pending or running job; a running worker notices at its next heartbeat."""
    cancelled = job.mark_cancelled()
    if cancelled:
        MediaItem.objects.filter(pk=job.item_id, status=MediaItem.Status.PROCESSING).update(
            status=MediaItem.Status.QUEUED
        )
        if job.remote_id and get_provider(job.provider).can_cancel:
            from media_jobs import tasks

            transaction.on_commit(lambda: tasks.enqueue_cancel_remote(job.pk))
    return cancelled


def job_claim(*, job_id: int) -> tuple[Job, str] | None:
    """Claim a job for this worker with a conditional UPDATE; return it and its lease token.

    Claimable: a queued job, or a running one whose lease is free (a remote job waiting for its
    next poll holds none) or lapsed (its worker died). A claim that starts a worker run counts as
    an attempt; a poll of a remote job does not.
    """
    now = timezone.now()
    token = secrets.token_hex(8)
    free = Q(lease_expires_at=None) | Q(lease_expires_at__lt=now)
    claimable = (Q(status=Job.Status.PENDING) & ~Q(stage="saved")) | (
        Q(status=Job.Status.RUNNING) & free
    )
    new_run = Q(status=Job.Status.PENDING) | Q(lease_expires_at__isnull=False)
    claimed = Job.objects.filter(claimable, pk=job_id).update(
        status=Job.Status.RUNNING,
        attempts=Case(
            When(new_run, then=F("attempts") + 1),
            default=F("attempts"),
            output_field=PositiveIntegerField(),
        ),
        stage=Case(
            When(status=Job.Status.PENDING, then=Value("starting")),
            default=F("stage"),
            output_field=CharField(),
        ),
        lease_expires_at=now + timedelta(seconds=settings.JOB_LEASE_SECONDS),
        lease_token=token,
        # The worker decides the next poll when it lets go (a webhook meanwhile sets it to now).
        next_poll_at=None,
        started_at=Coalesce(F("started_at"), now),
        progress_at=Coalesce(F("progress_at"), now),
        updated_at=now,
    )
    if claimed != 1:
        return None
    job = Job.objects.select_related("item__dataset", "preset", "provider_account").get(pk=job_id)
    return job, token


def fenced(job: Job, token: str):
    """Return a queryset that only matches while this worker still holds the job's lease."""
    return Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, lease_token=token)


class Heartbeat:
    """Renew a job's lease in the background and record progress; notice cancellation."""

    def __init__(self, job: Job, token: str):
        self.job_id = job.pk
        self.token = token
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress: tuple[int, str] | None = None
        self._thread = threading.Thread(
            target=self._loop, name=f"job-{job.pk}-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def report(self, percent: int, stage: str) -> bool:
        """Record progress (written at the next beat); return False once the job is cancelled."""
        with self._lock:
            self._progress = (max(0, min(99, percent)), stage)
        return not self.cancelled.is_set()

    def beat(self) -> None:
        """Write progress and extend the lease, fenced by this worker's lease token."""
        with self._lock:
            progress, self._progress = self._progress, None
        now = timezone.now()
        fields: dict[str, Any] = {
            "lease_expires_at": now + timedelta(seconds=settings.JOB_LEASE_SECONDS),
            "updated_at": now,
        }
        if progress:
            fields["progress"], fields["stage"] = progress
            fields["progress_at"] = now
        alive = Job.objects.filter(
            pk=self.job_id, status=Job.Status.RUNNING, lease_token=self.token
        ).update(**fields)
        if not alive:
            self.cancelled.set()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(settings.JOB_HEARTBEAT_SECONDS):
                try:
                    self.beat()
                except Exception:  # a lost beat is retried at the next one
                    log.exception("heartbeat for job %s failed", self.job_id)
        finally:
            connection.close()


def job_run(*, job_id: int) -> None:
    """Advance a job as far as a worker can take it; safe to call twice (at-least-once delivery)."""
    claim = job_claim(job_id=job_id)
    if claim is None:
        return
    job, token = claim
    if job.attempts > settings.JOB_MAX_ATTEMPTS:
        job_fail(job=job, token=token, message=f"Gave up after {job.attempts - 1} attempts.")
        return
    provider = get_provider(job.provider)
    if not provider.inline:
        from media_jobs import tracking

        tracking.job_advance(job=job, token=token, provider=provider)
        return
    MediaItem.objects.filter(pk=job.item_id).update(
        status=MediaItem.Status.PROCESSING, error="", updated_at=timezone.now()
    )
    with tempfile.TemporaryDirectory(prefix=f"job-{job.pk}-") as tmp, Heartbeat(job, token) as hb:
        try:
            hb.report(1, "downloading")
            input_path = local_copy(job.item.input_file, Path(tmp))
            workdir = Path(tmp) / "out"
            workdir.mkdir()
            result = provider.run(job, input_path=input_path, workdir=workdir, progress=hb.report)
            if hb.cancelled.is_set():
                raise JobCancelled
            hb.report(96, "storing")
            job_store_outputs(job=job, outputs=result.outputs)
        except JobCancelled:
            log.info("job %s was cancelled while running", job.pk)
            return
        except ProviderError as exc:
            job_fail(job=job, token=token, message=exc.message)
            return
        except Exception as exc:
            log.exception("job %s crashed", job.pk)
            job_fail(job=job, token=token, message=f"Internal error: {exc}")
            return
    job_succeed(job=job, token=token, statistics=result.statistics)


def local_copy(field_file, directory: Path) -> Path:
    """Return a local path to a stored file, streaming it from remote storage when needed."""
    storage = field_file.storage
    try:
        return Path(storage.path(field_file.name))
    except NotImplementedError:
        pass  # remote storage (S3): stream it into the job's temp dir
    dest = directory / Path(field_file.name).name
    with storage.open(field_file.name, "rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
    return dest


def job_store_outputs(*, job: Job, outputs) -> None:
    """Copy result files into storage as the job's one set of outputs, replacing earlier ones."""
    keep = []
    for out in outputs:
        record = JobOutput.objects.filter(job=job, filename=out.filename).first() or JobOutput(
            job=job, filename=out.filename
        )
        name = record.file.field.generate_filename(record, out.filename)
        record.file.storage.delete(name)  # deterministic names: overwrite, never suffix
        with out.path.open("rb") as fh:
            record.file.save(out.filename, File(fh), save=False)
        record.format = out.format
        record.kind = out.kind
        record.size = out.size
        record.checksum = out.checksum
        record.statistics = out.statistics
        record.save()
        keep.append(record.pk)
    for stale in JobOutput.objects.filter(job=job).exclude(pk__in=keep):
        stale.file.delete(save=False)
        stale.delete()


def job_succeed(*, job: Job, token: str, statistics: dict, transcript: Any = None) -> bool:
    """Mark the job a success (if this worker still holds it) and publish its item."""
    now = timezone.now()
    done = fenced(job, token).update(
        status=Job.Status.SUCCESS,
        stage="done",
        progress=100,
        statistics=statistics,
        finished_at=now,
        lease_expires_at=None,
        next_poll_at=None,
        error="",
        updated_at=now,
    )
    if done:
        item_fields: dict[str, Any] = {"statistics": statistics}
        if transcript is not None:
            item_fields["transcript"] = transcript
        MediaItem.objects.filter(pk=job.item_id).update(
            status=MediaItem.Status.PUBLISHED, error="", updated_at=now, **item_fields
        )
    return bool(done)


def job_fail(*, job: Job, token: str | None, message: str) -> bool:
    """Fail the job with a message (fenced by token when given) and its item with it."""
    now = timezone.now()
    qs = fenced(job, token) if token else Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE)
    done = qs.update(
        status=Job.Status.FAILED,
        error=message[:5000],
        finished_at=now,
        lease_expires_at=None,
        next_poll_at=None,
        updated_at=now,
    )
    if done:
        MediaItem.objects.filter(pk=job.item_id).update(
            status=MediaItem.Status.FAILED, error=message[:5000], updated_at=now
        )
    return bool(done)


@dataclass
class ReconcileReport:
    resumed: list[int]
    requeued: list[int]
    failed: list[int]
    polled: list[int] = field(default_factory=list)


def jobs_reconcile(*, pending_grace_seconds: int | None = None) -> ReconcileReport:
    """Resume jobs whose worker vanished and re-enqueue pending jobs a broker lost."""
    from media_jobs import tasks

    close_old_connections()
    now = timezone.now()
    report = ReconcileReport([], [], [])
    stale = Job.objects.filter(status=Job.Status.RUNNING, lease_expires_at__lt=now)
    for job in stale:
        if job.attempts >= settings.JOB_MAX_ATTEMPTS:
            if fenced(job, job.lease_token).filter(lease_expires_at__lt=now).exists():
                job_fail(
                    job=job, token=job.lease_token, message="Worker lost too many times; gave up."
                )
                report.failed.append(job.pk)
            continue
        tasks.enqueue_run_job(job.pk)
        report.resumed.append(job.pk)
    grace = pending_grace_seconds
    if grace is None:
        grace = settings.JOB_LEASE_SECONDS
    lost = Job.objects.filter(
        status=Job.Status.PENDING, updated_at__lt=now - timedelta(seconds=grace)
    ).exclude(stage="saved")
    for job in lost:
        Job.objects.filter(pk=job.pk, status=Job.Status.PENDING).update(updated_at=now)
        tasks.enqueue_run_job(job.pk)
        report.requeued.append(job.pk)
    # Remote jobs due a poll, in case no scheduler process runs (minute resolution then).
    from media_jobs import tracking

    report.polled = tracking.jobs_enqueue_due()
    return report
