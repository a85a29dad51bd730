"""Dashboard forms: they validate what was typed; the services do the work."""

from __future__ import annotations

from typing import Any

from django import forms

from accounts.models import Workspace
from accounts.roles import RANK, Role
from media_jobs.models import Dataset, Preset
from media_jobs.services import presets_visible


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)


class UploadForm(forms.Form):
    """Add one item to a dataset from a file or a URL, optionally running a preset on it."""

    # Field order is the order of the multipart body: everything typed comes before the file, so
    # it is parsed even when the file is skipped for being too large.
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), empty_label=None)
    title = forms.CharField(max_length=300, required=False)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    url = forms.URLField(
        label="or fetch from a URL",
        max_length=2000,
        required=False,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/episode.mp3"}),
    )
    preset = forms.ModelChoiceField(
        queryset=Preset.objects.none(),
        required=False,
        empty_label="Don't process now",
        help_text="Start a job with this preset as soon as the file is stored.",
    )
    file = forms.FileField(label="Media file", required=False)

    def __init__(
        self, *args: Any, workspace: Workspace, file_skipped: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # True when the file was dropped for exceeding the size cap: the view reports that (413).
        self.file_skipped = file_skipped
        self.fields["dataset"].queryset = workspace.datasets.all()
        self.fields["preset"].queryset = presets_visible([workspace.pk]).order_by("name")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("file") and data.get("url"):
            raise forms.ValidationError("Choose a file or give a URL, not both.")
        if self.file_skipped:
            return data
        if not data.get("file") and not data.get("url") and not self.errors:
            raise forms.ValidationError("Choose a file to upload or give a URL to fetch.")
        return data


class RunPresetForm(forms.Form):
    """Start a job on an item with one of the presets the workspace may use."""

    preset = forms.ModelChoiceField(queryset=Preset.objects.none(), empty_label=None)

    def __init__(self, *args: Any, workspace: Workspace, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["preset"].queryset = presets_visible([workspace.pk]).order_by("name")


def roles_up_to(role: str) -> list[tuple[str, str]]:
    """Return the role choices no stronger than `role`."""
    return [
        (value, label) for value, label in Role.choices if RANK[Role(value)] <= RANK[Role(role)]
    ]


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(initial=Role.MEMBER)

    def __init__(self, *args: Any, inviter_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Ownership is never handed out by link, and nobody invites above their own role.
        self.fields["role"].choices = [c for c in roles_up_to(inviter_role) if c[0] != Role.OWNER]


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    role = forms.ChoiceField(initial=Role.MEMBER)

    def __init__(self, *args: Any, creator_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A key never acts above its creator's role anyway; don't offer what it couldn't use.
        self.fields["role"].choices = roles_up_to(creator_role)
