from django import forms
from django.contrib import admin
from django.db import models
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from media_jobs.dashboard.presets import PrettyJSONField, parameter_rows
from media_jobs.models import Dataset, Job, JobOutput, MediaItem, Preset, ProviderAccount
from media_jobs.providers import PROVIDERS


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "provider", "workspace", "updated_at"]
    list_filter = ["provider", ("workspace", admin.EmptyFieldListFilter)]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    # Saving runs Preset.clean, which checks params with the provider's validate_params.
    fields = ["workspace", "name", "slug", "description", "provider", "params", "accepts"]
    readonly_fields = ["accepts"]
    formfield_overrides = {
        models.JSONField: {
            "form_class": PrettyJSONField,
            "widget": forms.Textarea(attrs={"rows": 14, "cols": 90, "class": "vLargeTextField"}),
        }
    }

    @admin.display(description="Parameters the provider accepts")
    def accepts(self, obj: Preset) -> SafeString:
        """Render the declared parameters of the preset's provider (of each, for a new one)."""
        if obj.pk and obj.provider in PROVIDERS:
            return self.parameters_table(obj.provider)
        return format_html_join(
            "",
            "<h4>{} <code>{}</code></h4>{}",
            ((label, kind, self.parameters_table(kind)) for kind, (label, _) in PROVIDERS.items()),
        )

    @staticmethod
    def parameters_table(kind: str) -> SafeString:
        """Return a provider's declared parameters as an HTML table."""
        rows = parameter_rows(kind)
        if not rows:
            return format_html("<p>{}</p>", "No declared parameters.")
        body = format_html_join(
            "",
            "<tr><td><code>{}</code>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td>"
            "<td>{}</td><td><strong>{}</strong> {}</td></tr>",
            (
                (
                    r["name"],
                    " (required)" if r["required"] else "",
                    r["type"],
                    r["default"],
                    r["range"],
                    r["choices"],
                    r["label"],
                    r["help"],
                )
                for r in rows
            ),
        )
        return format_html(
            '<table class="preset-parameters"><thead><tr><th>Name</th><th>Type</th><th>Default</th>'
            "<th>Range</th><th>Choices</th><th>Help</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )


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
