from django import forms
from django.contrib import admin

from media_jobs.models import Dataset, Job, JobOutput, MediaItem, Preset, ProviderAccount


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "provider", "workspace", "updated_at"]
    list_filter = ["provider", ("workspace", admin.EmptyFieldListFilter)]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "max_file_size", "require_metadata", "default_preset"]
    search_fields = ["name", "workspace__slug"]
    list_select_related = ["workspace", "default_preset"]


@admin.register(MediaItem)
class MediaItemAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "dataset", "status", "duration", "created_at"]
    list_filter = ["status", "source"]
    search_fields = ["title", "original_filename"]
    list_select_related = ["dataset"]
    readonly_fields = ["created_at", "updated_at"]


class ProviderAccountForm(forms.ModelForm):
    class Meta:
        model = ProviderAccount
        # Secrets are never shown here; they are set through the dashboard or the API.
        fields = [
            "workspace",
            "provider",
            "label",
            "auth_kind",
            "token_expires_at",
            "disabled",
            "last_error",
        ]


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    form = ProviderAccountForm
    list_display = ["__str__", "provider", "workspace", "auth_kind", "disabled", "last_error"]
    list_filter = ["provider", "disabled"]


class JobOutputInline(admin.TabularInline):
    model = JobOutput
    extra = 0
    readonly_fields = ["format", "filename", "file", "size", "checksum", "statistics"]
    can_delete = False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "preset", "provider", "status", "stage", "progress", "created_at"]
    list_filter = ["status", "provider"]
    search_fields = ["id", "remote_id", "item__title"]
    list_select_related = ["item", "preset"]
    readonly_fields = [
        "status",
        "stage",
        "progress",
        "attempts",
        "remote_id",
        "lease_expires_at",
        "started_at",
        "finished_at",
        "created_at",
        "statistics",
        "params",
    ]
    exclude = ["webhook_token"]
    inlines = [JobOutputInline]
    actions = ["cancel_jobs"]

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        from media_jobs import services

        n = sum(services.job_cancel(job=job) for job in queryset)
        self.message_user(request, f"Cancelled {n} job(s).")
