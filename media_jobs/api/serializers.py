"""API shapes: what goes in and what comes out."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from media_jobs.downloads import item_download_url, output_download_url
from media_jobs.formats import ALL_FORMATS
from media_jobs.models import Dataset, Job, JobOutput, MediaItem, Preset
from media_jobs.providers import PROVIDERS, get_provider


class DatasetSerializer(serializers.ModelSerializer):
    workspace = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    item_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "workspace",
            "name",
            "description",
            "allowed_formats",
            "max_file_size",
            "require_metadata",
            "default_preset",
            "created_at",
            "item_count",
        ]
        read_only_fields = ["created_at"]
        # Name uniqueness is per workspace, which the view resolves; it checks there.
        validators: list = []

    def validate_allowed_formats(self, value):
        if not isinstance(value, list) or not value:
            raise serializers.ValidationError("Give a non-empty list of formats.")
        value = [str(v).lower().lstrip(".") for v in value]
        unknown = sorted(set(value) - set(ALL_FORMATS))
        if unknown:
            raise serializers.ValidationError(
                f"Unknown formats: {', '.join(unknown)}. Known: {', '.join(ALL_FORMATS)}."
            )
        return value

    def validate_max_file_size(self, value):
        if value < 1024:
            raise serializers.ValidationError("The limit must be at least 1024 bytes.")
        return value


class DatasetCreateSerializer(DatasetSerializer):
    workspace = serializers.CharField(
        required=False, allow_blank=True, write_only=True, help_text="Workspace slug."
    )

    def to_representation(self, instance):
        return DatasetSerializer(instance, context=self.context).data


class ItemSerializer(serializers.ModelSerializer):
    dataset = serializers.PrimaryKeyRelatedField(read_only=True)
    workspace = serializers.CharField(source="dataset.workspace.slug", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = MediaItem
        fields = [
            "id",
            "workspace",
            "dataset",
            "title",
            "description",
            "metadata",
            "source",
            "source_url",
            "original_filename",
            "size",
            "format_name",
            "duration",
            "codec",
            "channels",
            "sample_rate",
            "has_video",
            "status",
            "error",
            "statistics",
            "transcript",
            "download_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_download_url(self, item) -> str:
        return item_download_url(self.context.get("request"), item)


class IntakeSerializer(serializers.Serializer):
    """Multipart (`audio`) or JSON (`audio_url`) intake, as Audioscrape's upload API."""

    audio = serializers.FileField(required=False)
    audio_url = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    title = serializers.CharField(required=False, allow_blank=True, max_length=300, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class PresetSerializer(serializers.ModelSerializer):
    workspace = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    is_global = serializers.BooleanField(read_only=True)
    provider = serializers.ChoiceField(choices=list(PROVIDERS), default="local")

    class Meta:
        model = Preset
        fields = [
            "id",
            "workspace",
            "is_global",
            "slug",
            "name",
            "description",
            "provider",
            "params",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        # Slug uniqueness is per workspace, which the view resolves; it checks there.
        validators: list = []

    def validate(self, attrs):
        provider = attrs.get("provider") or getattr(self.instance, "provider", "local")
        params = attrs.get("params", getattr(self.instance, "params", {}))
        try:
            attrs["params"] = get_provider(provider).validate_params(params or {})
        except ValueError as exc:
            raise serializers.ValidationError({"params": str(exc)}) from exc
        return attrs


class PresetCreateSerializer(PresetSerializer):
    workspace = serializers.CharField(
        required=False, allow_blank=True, write_only=True, help_text="Workspace slug."
    )

    def to_representation(self, instance):
        return PresetSerializer(instance, context=self.context).data


class OutputSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = JobOutput
        fields = [
            "id",
            "kind",
            "format",
            "filename",
            "size",
            "checksum",
            "statistics",
            "download_url",
        ]

    def get_download_url(self, output) -> str:
        return output_download_url(self.context.get("request"), output)


class JobSerializer(serializers.ModelSerializer):
    item = serializers.PrimaryKeyRelatedField(read_only=True)
    preset = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    preset_id = serializers.IntegerField(read_only=True)
    workspace = serializers.CharField(source="workspace.slug", read_only=True)
    dataset = serializers.IntegerField(source="item.dataset_id", read_only=True)
    outputs = serializers.SerializerMethodField()
    reports = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "workspace",
            "status",
            "progress",
            "stage",
            "error",
            "item",
            "dataset",
            "preset",
            "preset_id",
            "provider",
            "overrides",
            "params",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "statistics",
            "outputs",
            "reports",
        ]
        read_only_fields = fields

    @extend_schema_field(OutputSerializer(many=True))
    def get_outputs(self, job) -> list:
        """Return the processed media files."""
        media = [o for o in job.outputs.all() if o.kind == JobOutput.Kind.MEDIA]
        return OutputSerializer(media, many=True, context=self.context).data

    @extend_schema_field(OutputSerializer(many=True))
    def get_reports(self, job) -> list:
        """Return the analysis artifacts (the waveform image)."""
        extra = [o for o in job.outputs.all() if o.kind == JobOutput.Kind.REPORT]
        return OutputSerializer(extra, many=True, context=self.context).data


class JobCreateSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    preset = serializers.CharField(help_text="Preset id or slug.")
    overrides = serializers.DictField(required=False, default=dict)
    action = serializers.ChoiceField(choices=["start", "save"], default="start")


class SimpleJobSerializer(serializers.Serializer):
    """The one-shot endpoint's documented fields (others are read as algorithms or metadata)."""

    preset = serializers.CharField(help_text="Preset id or slug.")
    input_file = serializers.FileField(required=False)
    input_url = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    dataset = serializers.CharField(required=False, allow_blank=True, help_text="Id or name.")
    workspace = serializers.CharField(required=False, allow_blank=True)
    title = serializers.CharField(required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    action = serializers.ChoiceField(choices=["start", "save"], default="start")


class ProviderAccountSerializer(serializers.ModelSerializer):
    """An account at a remote provider; its credentials go in and never come out."""

    workspace = serializers.CharField(source="workspace.slug", read_only=True)
    credentials = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        write_only=True,
        help_text="The provider's credential fields (e.g. api_key; app_key and app_secret).",
    )

    class Meta:
        from media_jobs.models import ProviderAccount

        model = ProviderAccount
        fields = [
            "id",
            "workspace",
            "provider",
            "label",
            "auth_kind",
            "identity",
            "disabled",
            "last_error",
            "token_expires_at",
            "created_at",
            "credentials",
        ]
        read_only_fields = [
            "identity",
            "disabled",
            "last_error",
            "token_expires_at",
            "created_at",
        ]


class ProviderAccountCreateSerializer(ProviderAccountSerializer):
    workspace = serializers.CharField(
        required=False, allow_blank=True, write_only=True, help_text="Workspace slug."
    )
    auth_kind = serializers.CharField(required=False, allow_blank=True)
    test = serializers.BooleanField(
        default=True, write_only=True, help_text="Check the credentials with the provider first."
    )

    class Meta(ProviderAccountSerializer.Meta):
        fields = [*ProviderAccountSerializer.Meta.fields, "test"]
        validators: list = []

    def to_representation(self, instance):
        return ProviderAccountSerializer(instance, context=self.context).data
