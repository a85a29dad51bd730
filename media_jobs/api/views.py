"""Thin API views: validate input, call one service, shape the answer."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import require_role, resolve_workspace
from accounts.roles import Role
from media_jobs import connections, selectors, services
from media_jobs.api.serializers import (
    DatasetCreateSerializer,
    DatasetSerializer,
    IntakeSerializer,
    ItemSerializer,
    JobCreateSerializer,
    JobSerializer,
    PresetCreateSerializer,
    PresetSerializer,
    ProviderAccountCreateSerializer,
    ProviderAccountSerializer,
    SimpleJobSerializer,
)
from media_jobs.downloads import presigned_url, storage_is_local
from media_jobs.models import Dataset, MediaItem
from media_jobs.providers.base import ProviderError
from media_jobs.uploads import UploadTooLarge, limit_upload_size


def intake_error_response(exc: services.IntakeError) -> Response:
    body = {"success": False, "error": exc.message}
    if exc.item is not None:
        body["item_id"] = exc.item.pk
    return Response(body, status=exc.status)


def read_body(request, too_large: str = "File exceeds this dataset's size limit."):
    """Return request.data, answering an upload over the size cap with 413."""
    try:
        return request.data
    except UploadTooLarge:
        raise services.IntakeError(too_large, status=413) from None


class DatasetViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = DatasetSerializer

    def get_queryset(self):
        qs = selectors.datasets_for(self.request).annotate(item_count=Count("items"))
        return qs.order_by("name", "id")

    def get_serializer_class(self):
        return DatasetCreateSerializer if self.action == "create" else DatasetSerializer

    def perform_create(self, serializer):
        ws = resolve_workspace(self.request, serializer.validated_data.pop("workspace", ""))
        require_role(self.request, ws.pk, Role.MEMBER)
        check_default_preset(serializer.validated_data.get("default_preset"), ws.pk)
        if Dataset.objects.filter(workspace=ws, name=serializer.validated_data["name"]).exists():
            raise ValidationError({"name": "This workspace already has a dataset with that name."})
        serializer.save(workspace=ws)

    def perform_update(self, serializer):
        require_role(self.request, serializer.instance.workspace_id, Role.MEMBER)
        check_default_preset(
            serializer.validated_data.get("default_preset"), serializer.instance.workspace_id
        )
        serializer.save()

    @extend_schema(request=IntakeSerializer, responses={201: ItemSerializer})
    @action(
        detail=True,
        methods=["get", "post"],
        parser_classes=[MultiPartParser, FormParser, JSONParser],
    )
    def items(self, request, pk=None):
        """List a dataset's items, or add one (multipart `audio` or JSON `audio_url`)."""
        dataset = get_object_or_404(selectors.datasets_for(request), pk=pk)
        if request.method == "GET":
            page = self.paginate_queryset(dataset.items.all())
            data = ItemSerializer(page, many=True, context={"request": request}).data
            return self.get_paginated_response(data)
        require_role(request, dataset.workspace_id, Role.MEMBER)
        try:
            item = intake(request, dataset)
        except services.IntakeError as exc:
            return intake_error_response(exc)
        body = ItemSerializer(item, context={"request": request}).data
        message = "Audio stored and queued" + (
            " for processing" if dataset.default_preset_id else ""
        )
        return Response(
            {"success": True, "item_id": item.pk, "message": message, **body},
            status=status.HTTP_201_CREATED,
        )


def check_default_preset(preset, workspace_id: int) -> None:
    if preset is not None and preset.workspace_id not in (None, workspace_id):
        raise ValidationError({"default_preset": "Unknown preset."})


def intake(request, dataset: Dataset) -> MediaItem:
    """Run intake for one request (multipart or JSON) into a dataset."""
    services.check_size_header(
        dataset=dataset, content_length=int(request.META.get("CONTENT_LENGTH") or 0)
    )
    limit_upload_size(request._request, dataset.max_file_size)
    data = read_body(request, services.too_large_message(dataset))
    form = IntakeSerializer(data=data)
    if not form.is_valid():
        raise services.IntakeError(flatten_errors(form.errors), status=400)
    fields = form.validated_data
    common = {
        "title": fields["title"],
        "description": fields["description"],
        "user": request.user,
    }
    if fields.get("audio") is not None:
        return services.item_create_from_upload(dataset=dataset, upload=fields["audio"], **common)
    if fields.get("audio_url"):
        return services.item_create_from_url(dataset=dataset, url=fields["audio_url"], **common)
    raise services.IntakeError(
        "Send the file as multipart field `audio`, or JSON with `audio_url`.", status=400
    )


def flatten_errors(errors) -> str:
    return "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in errors.items())


class ItemViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ItemSerializer

    def get_queryset(self):
        qs = selectors.items_for(self.request)
        if dataset := self.request.query_params.get("dataset"):
            qs = qs.filter(dataset_id=dataset) if dataset.isdigit() else qs.none()
        if state := self.request.query_params.get("status"):
            qs = qs.filter(status=state)
        return qs

    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        item = get_object_or_404(self.get_queryset(), pk=pk)
        if not item.input_file:
            raise Http404
        return serve_file(item.input_file, item.original_filename or "input")


class PresetViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = PresetSerializer

    def get_queryset(self):
        return selectors.presets_for(self.request)

    def get_serializer_class(self):
        return PresetCreateSerializer if self.action == "create" else PresetSerializer

    def perform_create(self, serializer):
        ws = resolve_workspace(self.request, serializer.validated_data.pop("workspace", ""))
        require_role(self.request, ws.pk, Role.ADMIN)
        if ws.presets.filter(slug=serializer.validated_data["slug"]).exists():
            raise ValidationError({"slug": "This workspace already has a preset with that slug."})
        serializer.save(workspace=ws)

    def check_writable(self, preset):
        if preset.is_global:
            raise PermissionDenied("Global presets are managed by operators in the admin.")
        require_role(self.request, preset.workspace_id, Role.ADMIN)

    def perform_update(self, serializer):
        self.check_writable(serializer.instance)
        serializer.save()

    def perform_destroy(self, instance):
        self.check_writable(instance)
        if instance.jobs.exists():
            raise ValidationError("This preset has jobs; it cannot be deleted.")
        instance.delete()


class JobViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = JobSerializer

    def get_queryset(self):
        qs = selectors.jobs_for(self.request)
        if state := self.request.query_params.get("status"):
            qs = qs.filter(status=state)
        if item := self.request.query_params.get("item"):
            qs = qs.filter(item_id=item) if item.isdigit() else qs.none()
        return qs

    @extend_schema(request=JobCreateSerializer, responses={201: JobSerializer})
    def create(self, request):
        form = JobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        item = get_object_or_404(selectors.items_for(request), pk=form.validated_data["item"])
        ws = item.dataset.workspace
        require_role(request, ws.pk, Role.MEMBER)
        job = create_job(request, item, form.validated_data["preset"], form.validated_data)
        return Response(self.render(job), status=status.HTTP_201_CREATED)

    def render(self, job):
        job = selectors.jobs_for(self.request).get(pk=job.pk)
        return JobSerializer(job, context={"request": self.request}).data

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = get_object_or_404(self.get_queryset(), pk=pk)
        require_role(request, job.workspace_id, Role.MEMBER)
        if not services.job_cancel(job=job):
            return Response(
                {"detail": f"The job has already ended ({job.status})."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(self.render(job))

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        job = get_object_or_404(self.get_queryset(), pk=pk)
        require_role(request, job.workspace_id, Role.MEMBER)
        services.job_start(job=job)
        return Response(self.render(job))


def create_job(request, item, preset_ref, fields):
    preset = services.preset_resolve(workspace=item.dataset.workspace, ref=preset_ref)
    if preset is None:
        raise ValidationError({"preset": f"Unknown preset {preset_ref!r}."})
    try:
        with transaction.atomic():
            return services.job_create(
                item=item,
                preset=preset,
                overrides=fields.get("overrides") or {},
                user=request.user,
                start=fields.get("action", "start") == "start",
            )
    except ValueError as exc:
        raise ValidationError({"detail": str(exc)}) from exc


class SimpleJobView(APIView):
    """One-shot: upload or fetch the input, then create and start a job (Auphonic's Simple API)."""

    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(request=SimpleJobSerializer, responses={201: JobSerializer})
    def post(self, request):
        # The dataset is named inside the body, so guard the stream with the caller's largest
        # limit; the chosen dataset's own limit is checked once the body is in.
        limit_upload_size(request._request, selectors.largest_upload_limit(request))
        try:
            data = read_body(request)
        except services.IntakeError as exc:
            return intake_error_response(exc)
        form = SimpleJobSerializer(data=data)
        form.is_valid(raise_exception=True)
        fields = form.validated_data
        ws = resolve_workspace(request, fields.get("workspace"))
        require_role(request, ws.pk, Role.MEMBER)
        dataset = services.dataset_resolve(workspace=ws, ref=fields.get("dataset") or "inbox")
        if dataset is None:
            raise Http404
        preset = services.preset_resolve(workspace=ws, ref=fields["preset"])
        if preset is None:
            raise ValidationError({"preset": f"Unknown preset {fields['preset']!r}."})
        try:
            algorithms, metadata = services.split_simple_fields(data)
            overrides = {k: v for k, v in (("algorithms", algorithms), ("metadata", metadata)) if v}
            services.effective_params(preset, overrides)
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        common = {
            "title": fields["title"] or metadata.get("title", ""),
            "description": fields["description"] or metadata.get("summary", ""),
            "metadata": metadata,
            "user": request.user,
            "auto_process": False,
        }
        try:
            with transaction.atomic():
                if fields.get("input_file") is not None:
                    item = services.item_create_from_upload(
                        dataset=dataset, upload=fields["input_file"], **common
                    )
                elif fields.get("input_url"):
                    item = services.item_create_from_url(
                        dataset=dataset, url=fields["input_url"], **common
                    )
                else:
                    raise services.IntakeError(
                        "Send `input_file` (multipart) or `input_url`.", status=400
                    )
                job = services.job_create(
                    item=item,
                    preset=preset,
                    overrides=overrides,
                    user=request.user,
                    start=fields["action"] == "start",
                )
        except services.IntakeError as exc:
            return intake_error_response(exc)
        job = selectors.jobs_for(request).get(pk=job.pk)
        return Response(
            JobSerializer(job, context={"request": request}).data, status=status.HTTP_201_CREATED
        )


class OutputDownloadView(APIView):
    """Stream an output from local disk, or redirect to a presigned URL on S3."""

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, pk: int):
        output = get_object_or_404(selectors.outputs_for(request), pk=pk)
        return serve_file(output.file, output.filename)


def serve_file(field_file, filename: str):
    if not storage_is_local(field_file.storage):
        return HttpResponseRedirect(presigned_url(field_file, filename))
    return FileResponse(field_file.open("rb"), as_attachment=True, filename=filename)


class WhoAmIView(APIView):
    """Return the caller and the workspaces (with roles) it may act in."""

    @extend_schema(responses=serializers.DictField())
    def get(self, request):
        from accounts.access import request_roles
        from accounts.models import Workspace

        roles = request_roles(request)
        workspaces = Workspace.objects.filter(pk__in=roles.keys())
        return Response(
            {
                "email": request.user.email,
                "workspaces": [
                    {"slug": w.slug, "name": w.name, "role": roles[w.pk]} for w in workspaces
                ],
            }
        )


class ProviderAccountViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Connect, test and disconnect the workspace's accounts at remote providers."""

    serializer_class = ProviderAccountSerializer

    def get_queryset(self):
        return selectors.provider_accounts_for(self.request)

    @extend_schema(
        request=ProviderAccountCreateSerializer, responses={201: ProviderAccountSerializer}
    )
    def create(self, request):
        form = ProviderAccountCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = form.validated_data
        ws = resolve_workspace(request, fields.get("workspace"))
        require_role(request, ws.pk, Role.ADMIN)
        try:
            account = connections.account_create(
                workspace=ws,
                provider=fields["provider"],
                credentials=fields["credentials"],
                label=fields.get("label", ""),
                auth_kind=fields.get("auth_kind", ""),
            )
        except connections.AccountError as exc:
            raise ValidationError({"credentials": str(exc)}) from exc
        if fields["test"]:
            try:
                connections.account_test(account=account)
            except ProviderError as exc:
                account.delete()
                if not exc.permanent:
                    return Response(
                        {"detail": f"Could not check the credentials now: {exc.message}"},
                        status=status.HTTP_503_SERVICE_UNAVAILABLE,
                    )
                return Response(
                    {"detail": f"The provider refused these credentials: {exc.message}"},
                    status=status.HTTP_400_BAD_REQUEST,
                )
        return Response(ProviderAccountSerializer(account).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ProviderAccountSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Check the account with the provider; an account the provider refuses is disabled."""
        account = get_object_or_404(self.get_queryset(), pk=pk)
        require_role(request, account.workspace_id, Role.ADMIN)
        try:
            connections.account_test(account=account)
        except ProviderError as exc:
            account.refresh_from_db()
            body = ProviderAccountSerializer(account).data
            return Response({**body, "detail": exc.message}, status=status.HTTP_409_CONFLICT)
        account.refresh_from_db()
        return Response(ProviderAccountSerializer(account).data)

    def perform_destroy(self, instance):
        require_role(self.request, instance.workspace_id, Role.ADMIN)
        connections.account_disconnect(account=instance)
