"""Dashboard pages: thin views over the services, every lookup scoped to the caller's workspaces."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.uploadhandler import SkipFile
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from accounts import services as account_services
from accounts.models import ApiKey, Membership
from accounts.roles import Role, can_manage, can_write
from media_jobs import services
from media_jobs.dashboard.forms import (
    ApiKeyForm,
    InviteForm,
    RunPresetForm,
    UploadForm,
    WorkspaceForm,
)
from media_jobs.dashboard.htmx import is_htmx, pick_template
from media_jobs.downloads import item_download_url, output_download_url
from media_jobs.models import Job, JobOutput, MediaItem
from media_jobs.uploads import SizeLimitUploadHandler, UploadTooLarge

RECENT_JOBS = 15
RECENT_ITEMS = 10
ITEMS_PER_PAGE = 50

# --- access ----------------------------------------------------------------------------------


def get_membership(request: HttpRequest, slug: str) -> Membership:
    """Return the caller's membership of the workspace named by slug; 404 for anyone else."""
    membership = (
        Membership.objects.select_related("workspace")
        .filter(user=request.user, workspace__slug=slug)
        .first()
    )
    if membership is None:
        raise Http404("No such workspace.")
    return membership


def require_write(membership: Membership) -> None:
    """Refuse (403) a write by a viewer."""
    if not can_write(membership.role):
        raise PermissionDenied("Viewers may look but not change anything.")


def require_manage(membership: Membership) -> None:
    """Refuse (403) member and key management to anyone below admin."""
    if not can_manage(membership.role):
        raise PermissionDenied("Only admins and owners manage members and API keys.")


def render_page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    membership: Membership | None = None,
    status: int = 200,
) -> HttpResponse:
    """Render a page (or partial) with what the layout needs to know about the caller."""
    ctx: dict[str, Any] = {
        "my_memberships": Membership.objects.filter(user=request.user)
        .select_related("workspace")
        .order_by("workspace__name"),
    }
    if membership is not None:
        ctx.update(
            membership=membership,
            workspace=membership.workspace,
            role=membership.role,
            can_write=can_write(membership.role),
            can_manage=can_manage(membership.role),
        )
    ctx.update(context or {})
    response = render(request, template, ctx, status=status)
    # The same URL answers with a partial or a page: caches must keep them apart.
    patch_vary_headers(response, ("HX-Request",))
    return response


# --- display helpers -------------------------------------------------------------------------

LOUDNESS_MEASURES = (
    ("integrated", "Integrated loudness", "LUFS"),
    ("lra", "Loudness range", "LU"),
    ("true_peak", "True peak", "dBTP"),
    ("max_momentary", "Max momentary loudness", "LUFS"),
    ("max_shortterm", "Max short-term loudness", "LUFS"),
    ("noise_level", "Noise level", "LUFS"),
    ("snr", "Signal-to-noise ratio", "dB"),
)
# Facts of the audio itself, shown under the loudness measures when the engine recorded them.
AUDIO_FACTS = (
    ("duration", "Duration", ""),
    ("sample_rate", "Sample rate", "Hz"),
    ("channels", "Channels", ""),
)
JOB_SETTINGS = (("target", "Target loudness", "LUFS"), ("max_peak", "Peak ceiling", "dBTP"))


def as_dict(value: Any) -> dict[str, Any]:
    """Return value when it is a dict, else an empty one (statistics come from JSON)."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """Return value when it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def fmt_number(value: Any, digits: int = 1) -> str:
    """Return a measurement formatted for a table, or an em dash when it is missing."""
    if value is None or isinstance(value, bool):
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(number):
        return "—"
    if math.isinf(number):
        # Silence measures as -inf LUFS: say so rather than print a number.
        return "-∞" if number < 0 else "∞"
    return f"{number:.{digits}f}"


def fmt_duration(seconds: Any) -> str:
    """Return a duration as m:ss or h:mm:ss."""
    try:
        total = round(float(seconds))
    except (TypeError, ValueError):
        return "—"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def loudness_rows(statistics: Any) -> list[dict[str, str]]:
    """Return the input-versus-output loudness table of a job's statistics."""
    stats = as_dict(statistics)
    before, after = as_dict(stats.get("input")), as_dict(stats.get("output"))
    if not before and not after:
        return []
    rows = [
        {
            "label": label,
            "unit": unit,
            "input": fmt_number(before.get(key)),
            "output": fmt_number(after.get(key)),
        }
        for key, label, unit in LOUDNESS_MEASURES
        # The first three always show; the finer measures only where the engine reported them.
        if key in ("integrated", "lra", "true_peak") or key in before or key in after
    ]
    for key, label, unit in AUDIO_FACTS:
        if key in before or key in after:
            shown = fmt_duration if key == "duration" else (lambda v: fmt_number(v, 0))
            rows.append(
                {
                    "label": label,
                    "unit": unit,
                    "input": shown(before[key]) if before.get(key) is not None else "—",
                    "output": shown(after[key]) if after.get(key) is not None else "—",
                }
            )
    return rows


def job_setting_rows(statistics: Any) -> list[dict[str, str]]:
    """Return the gain applied and the targets a job aimed for, when recorded."""
    stats = as_dict(statistics)
    rows = []
    if stats.get("gain") is not None:
        gain = fmt_number(stats["gain"])
        # A gain reads as a change: show its sign either way.
        if gain[0].isdigit() and float(gain) != 0:
            gain = f"+{gain}"
        rows.append({"label": "Gain applied", "value": gain, "unit": "dB"})
    for key, label, unit in JOB_SETTINGS:
        if stats.get(key) is not None:
            rows.append({"label": label, "value": fmt_number(stats[key]), "unit": unit})
    return rows


def output_rows(request: HttpRequest, job: Job) -> list[dict[str, Any]]:
    """Return a job's outputs with their download links and measured figures."""
    rows = []
    output: JobOutput
    for output in job.outputs.filter(kind=JobOutput.Kind.MEDIA):
        stats = as_dict(output.statistics)
        rate = stats.get("sample_rate")
        rows.append(
            {
                "output": output,
                "url": output_download_url(request, output),
                "integrated": fmt_number(stats.get("integrated")),
                "lra": fmt_number(stats.get("lra")),
                "true_peak": fmt_number(stats.get("true_peak")),
                "duration": fmt_duration(stats["duration"]) if "duration" in stats else "—",
                "sample_rate": fmt_number(rate, 0) if rate is not None else "—",
                "channels": stats.get("channels") or "—",
            }
        )
    return rows


def waveform_url(request: HttpRequest, job: Job) -> str:
    """Return the link of the job's waveform image, when the engine drew one."""
    image = job.outputs.filter(kind=JobOutput.Kind.REPORT, format="png").first()
    return output_download_url(request, image) if image else ""


def with_durations(items: Iterable[MediaItem]) -> list[MediaItem]:
    """Attach a readable duration to each item (templates have no filter for it)."""
    items = list(items)
    for item in items:
        item.duration_text = fmt_duration(item.duration) if item.duration is not None else "—"
    return items


# --- home and workspaces ---------------------------------------------------------------------


@login_required
def home(request: HttpRequest, *, redirect_single: bool = True) -> HttpResponse:
    """List the caller's workspaces (or go straight to the only one) and create new ones."""
    memberships = list(
        Membership.objects.filter(user=request.user)
        .select_related("workspace")
        .order_by("workspace__name")
    )
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        ws = account_services.workspace_create(name=form.cleaned_data["name"], owner=request.user)
        messages.success(request, f"Workspace {ws.name} created.")
        return redirect("dashboard:workspace", slug=ws.slug)
    if request.method == "GET" and redirect_single and len(memberships) == 1:
        return redirect("dashboard:workspace", slug=memberships[0].workspace.slug)
    status = 400 if form.is_bound else 200
    return render_page(
        request, "dashboard/home.html", {"memberships": memberships, "form": form}, status=status
    )


@login_required
def workspace(request: HttpRequest, slug: str) -> HttpResponse:
    """Show a workspace's datasets, recent items and recent jobs (the jobs table alone for htmx)."""
    m = get_membership(request, slug)
    ws = m.workspace
    jobs = list(Job.objects.filter(workspace=ws).select_related("item", "preset")[:RECENT_JOBS])
    context: dict[str, Any] = {
        "jobs": jobs,
        "jobs_active": any(job.is_active for job in jobs),
        "poll_url": request.path,
    }
    if not is_htmx(request):
        context["datasets"] = ws.datasets.annotate(item_count=Count("items"))
        context["items"] = with_durations(
            MediaItem.objects.filter(dataset__workspace=ws).select_related("dataset")[:RECENT_ITEMS]
        )
    template = pick_template(request, "dashboard/workspace.html", "dashboard/_jobs_table.html")
    return render_page(request, template, context, membership=m)


# --- upload ----------------------------------------------------------------------------------


class SkipOversizeFile(SizeLimitUploadHandler):
    """Skip a file over the cap instead of aborting the body, so the typed fields still arrive."""

    def __init__(self, request: HttpRequest | None = None, *, max_bytes: int) -> None:
        super().__init__(request, max_bytes=max_bytes)
        self.skipped = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        try:
            return super().receive_data_chunk(raw_data, start)
        except UploadTooLarge:
            self.skipped = True
            # Django discards the rest of this file (and its temp file) and parses the other
            # fields, so the page can refill what the user typed.
            raise SkipFile from None


@csrf_exempt
@login_required
def upload(request: HttpRequest, slug: str) -> HttpResponse:
    """Add an item from a file or URL and optionally start a preset on it."""
    m = get_membership(request, slug)
    guard = None
    if request.method == "POST":
        require_write(m)  # before a byte of the body is read
        # The size guard must be installed before anything parses the body, and the CSRF check
        # parses it: hence csrf_exempt outside and csrf_protect inside (Django's documented way).
        # The dataset is chosen inside the body, so guard with the workspace's largest limit;
        # the chosen dataset's own limit is enforced by the service.
        largest = max(
            m.workspace.datasets.values_list("max_file_size", flat=True),
            default=settings.INTAKE_DEFAULT_MAX_FILE_SIZE,
        )
        guard = SkipOversizeFile(request, max_bytes=largest)
        request.upload_handlers.insert(0, guard)
    return _upload(request, m, guard)


@csrf_protect
def _upload(request: HttpRequest, m: Membership, guard: SkipOversizeFile | None) -> HttpResponse:
    """Show the upload form, or run intake for a CSRF-checked POST."""
    ws = m.workspace
    status = 200
    if request.method == "POST":
        form = UploadForm(
            request.POST, request.FILES, workspace=ws, file_skipped=bool(guard and guard.skipped)
        )
        if form.is_valid():
            try:
                new_item, new_job = intake(request, form, guard)
            except services.IntakeError as err:
                # Re-render the bound form: everything typed comes back, with the reason.
                form.add_error(None, err.message)
                status = err.status
            else:
                if new_job is not None:
                    messages.success(request, f"{new_item} stored; {new_job.preset} is running.")
                    return redirect("dashboard:job", slug=ws.slug, pk=new_job.pk)
                messages.success(request, f"{new_item} stored.")
                return redirect("dashboard:item", slug=ws.slug, pk=new_item.pk)
        else:
            status = 400
    else:
        initial = {}
        wanted = request.GET.get("dataset", "")
        dataset = ws.datasets.filter(pk=wanted).first() if wanted.isdigit() else None
        initial["dataset"] = dataset or ws.datasets.filter(name="inbox").first()
        form = UploadForm(workspace=ws, initial=initial)
    return render_page(
        request, "dashboard/upload.html", {"form": form}, membership=m, status=status
    )


def intake(
    request: HttpRequest, form: UploadForm, guard: SkipOversizeFile | None
) -> tuple[MediaItem, Job | None]:
    """Store the form's file or URL as an item and start the chosen preset on it."""
    data = form.cleaned_data
    dataset, preset = data["dataset"], data["preset"]
    if guard is not None and guard.skipped:
        raise services.IntakeError(services.too_large_message(dataset), status=413)
    if preset is not None:
        # Refuse a broken preset before storing anything, not after.
        try:
            services.effective_params(preset, {})
        except ValueError as exc:
            raise services.IntakeError(f"Preset {preset} cannot run: {exc}", status=400) from exc
    common: dict[str, Any] = {
        "title": data["title"],
        "description": data["description"],
        "user": request.user,
        # A chosen preset replaces the dataset's default one rather than running beside it.
        "auto_process": preset is None,
    }
    if data.get("file"):
        item = services.item_create_from_upload(dataset=dataset, upload=data["file"], **common)
    else:
        item = services.item_create_from_url(dataset=dataset, url=data["url"], **common)
    new_job = None
    if preset is not None:
        # The job is enqueued on commit: inside atomic() that is once the row is really there.
        with transaction.atomic():
            new_job = services.job_create(item=item, preset=preset, user=request.user)
    return item, new_job


# --- datasets and items ----------------------------------------------------------------------


@login_required
def dataset(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """List a dataset's items with their probe facts and a per-item run form."""
    m = get_membership(request, slug)
    ds = get_object_or_404(m.workspace.datasets.select_related("default_preset"), pk=pk)
    page = Paginator(ds.items.all(), ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "dataset": ds,
        "page": page,
        "items": with_durations(page.object_list),
        "presets": services.presets_visible([m.workspace_id]).order_by("name"),
    }
    return render_page(request, "dashboard/dataset.html", context, membership=m)


@login_required
def item(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Show an item's probe facts, its input download and its jobs (the jobs alone for htmx)."""
    m = get_membership(request, slug)
    obj = get_object_or_404(
        MediaItem.objects.filter(dataset__workspace=m.workspace).select_related("dataset"), pk=pk
    )
    jobs = list(obj.jobs.select_related("item", "preset"))
    context: dict[str, Any] = {
        "jobs": jobs,
        "jobs_active": any(job.is_active for job in jobs),
        "poll_url": request.path,
        "item": with_durations([obj])[0],
    }
    if not is_htmx(request):
        context["download_url"] = item_download_url(request, obj)
        context["presets"] = services.presets_visible([m.workspace_id]).order_by("name")
    template = pick_template(request, "dashboard/item.html", "dashboard/_jobs_table.html")
    return render_page(request, template, context, membership=m)


@login_required
@require_POST
def item_run(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Start a job with a preset on an item."""
    m = get_membership(request, slug)
    obj = get_object_or_404(MediaItem.objects.filter(dataset__workspace=m.workspace), pk=pk)
    require_write(m)
    form = RunPresetForm(request.POST, workspace=m.workspace)
    if not form.is_valid():
        messages.error(request, "Choose one of the presets this workspace may use.")
        return redirect("dashboard:item", slug=slug, pk=obj.pk)
    if not obj.input_file:
        messages.error(request, "This item has no stored input to process.")
        return redirect("dashboard:item", slug=slug, pk=obj.pk)
    try:
        with transaction.atomic():
            job = services.job_create(
                item=obj, preset=form.cleaned_data["preset"], user=request.user
            )
    except ValueError as exc:
        messages.error(request, f"The preset cannot run: {exc}")
        return redirect("dashboard:item", slug=slug, pk=obj.pk)
    messages.success(request, f"{job.preset} started on {obj}.")
    return redirect("dashboard:job", slug=slug, pk=job.pk)


# --- jobs ------------------------------------------------------------------------------------


@login_required
def job(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Show a job's status, statistics and outputs (the live part alone for htmx)."""
    m = get_membership(request, slug)
    obj = get_object_or_404(
        Job.objects.filter(workspace=m.workspace).select_related("item__dataset", "preset"), pk=pk
    )
    context = {
        "job": obj,
        "loudness": loudness_rows(obj.statistics),
        "job_settings": job_setting_rows(obj.statistics),
        "outputs": output_rows(request, obj),
        "waveform_url": waveform_url(request, obj),
        "warnings": [str(w) for w in as_list(as_dict(obj.statistics).get("warnings"))],
        "poll_url": request.path,
    }
    template = pick_template(request, "dashboard/job.html", "dashboard/_job_status.html")
    return render_page(request, template, context, membership=m)


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Cancel a pending or running job."""
    m = get_membership(request, slug)
    obj = get_object_or_404(Job.objects.filter(workspace=m.workspace), pk=pk)
    require_write(m)
    if services.job_cancel(job=obj):
        messages.success(request, f"Job {obj.pk} cancelled.")
    else:
        messages.info(request, f"Job {obj.pk} had already ended ({obj.status}).")
    return redirect("dashboard:job", slug=slug, pk=obj.pk)


# --- members and API keys --------------------------------------------------------------------


def members_page(
    request: HttpRequest,
    m: Membership,
    *,
    invite_form: InviteForm | None = None,
    key_form: ApiKeyForm | None = None,
    status: int = 200,
    **extra: Any,
) -> HttpResponse:
    """Render the members page; admins also get invitations and API keys."""
    ws = m.workspace
    memberships = list(ws.memberships.select_related("user").order_by("user__email"))
    owners = sum(1 for x in memberships if x.role == Role.OWNER)
    context: dict[str, Any] = {
        "memberships": memberships,
        "removable": {
            x.pk
            for x in memberships
            if may_remove(m, x) and not (x.role == Role.OWNER and owners == 1)
        },
        **extra,
    }
    if can_manage(m.role):
        context.update(
            invite_form=invite_form or InviteForm(inviter_role=m.role),
            key_form=key_form or ApiKeyForm(creator_role=m.role),
            invitations=ws.invitations.filter(accepted_at=None).order_by("-created_at"),
            api_keys=ws.api_keys.select_related("user").order_by("-created_at"),
        )
    return render_page(request, "dashboard/members.html", context, membership=m, status=status)


def may_remove(actor: Membership, target: Membership) -> bool:
    """Return whether actor may remove target: admins remove non-owners, owners anyone."""
    if not can_manage(actor.role):
        return False
    return target.role != Role.OWNER or actor.role == Role.OWNER


@login_required
def members(request: HttpRequest, slug: str) -> HttpResponse:
    """List the workspace's members; admins manage invitations and API keys here."""
    return members_page(request, get_membership(request, slug))


@login_required
@require_POST
def invite(request: HttpRequest, slug: str) -> HttpResponse:
    """Invite someone by email and show the link (the default email backend only logs it)."""
    m = get_membership(request, slug)
    require_manage(m)
    form = InviteForm(request.POST, inviter_role=m.role)
    if not form.is_valid():
        return members_page(request, m, invite_form=form, status=400)
    email = form.cleaned_data["email"]
    if m.workspace.memberships.filter(user__email__iexact=email).exists():
        form.add_error("email", "This person is already a member.")
        return members_page(request, m, invite_form=form, status=400)
    invitation, link = account_services.invitation_create(
        workspace=m.workspace, email=email, role=form.cleaned_data["role"], invited_by=request.user
    )
    return members_page(request, m, invitation=invitation, invitation_link=link)


@login_required
@require_POST
def member_remove(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Remove a member (never the last owner) and revoke their keys for this workspace."""
    m = get_membership(request, slug)
    target = get_object_or_404(m.workspace.memberships.select_related("user"), pk=pk)
    require_manage(m)
    if not may_remove(m, target):
        raise PermissionDenied("Only an owner may remove an owner.")
    try:
        account_services.membership_remove(membership=target)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:members", slug=slug)
    messages.success(request, f"{target.user.email} was removed from {m.workspace.name}.")
    if target.pk == m.pk:
        return redirect("dashboard:workspaces")
    return redirect("dashboard:members", slug=slug)


@login_required
@require_POST
def key_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Create an API key and show its secret on this response only."""
    m = get_membership(request, slug)
    require_manage(m)
    form = ApiKeyForm(request.POST, creator_role=m.role)
    if not form.is_valid():
        return members_page(request, m, key_form=form, status=400)
    key, raw = account_services.api_key_create(
        workspace=m.workspace,
        user=request.user,
        role=form.cleaned_data["role"],
        name=form.cleaned_data["name"],
    )
    response = members_page(request, m, new_key=key, new_key_raw=raw)
    # The secret is on this page only: keep it out of every cache.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def key_revoke(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Revoke an API key of this workspace."""
    m = get_membership(request, slug)
    key = get_object_or_404(ApiKey.objects.filter(workspace=m.workspace), pk=pk)
    require_manage(m)
    account_services.api_key_revoke(key=key)
    messages.success(request, f"Key {key.prefix}… revoked.")
    return redirect(reverse("dashboard:members", kwargs={"slug": slug}) + "#api-keys")
