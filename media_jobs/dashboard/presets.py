"""Dashboard pages for presets: the parameter form is derived from the provider's declaration.

Each declared Param becomes a field by its type; dotted names ("algorithms.loudnesstarget")
address nested params. An "Advanced (JSON)" textarea holds the full params for what no field
covers and wins when it is edited. Whatever is saved goes through the provider's validate_params.
"""

from __future__ import annotations

import copy
import json
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, ProtectedError, Q
from django.forms.boundfield import BoundField
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.html import escape
from django.utils.text import capfirst, slugify
from django.views.decorators.http import require_POST

from accounts.models import Membership
from media_jobs.dashboard.views import get_membership, render_page, require_manage
from media_jobs.models import Dataset, Preset
from media_jobs.providers import PROVIDERS, get_provider
from media_jobs.providers.base import Param
from media_jobs.services import presets_visible

# The derived fields are named "param-<dotted name>", apart from the preset's own fields.
PARAM_PREFIX = "param"
SUMMARY_ITEMS = 6
TYPE_NAMES: dict[type, str] = {
    bool: "true/false",
    int: "whole number",
    float: "number",
    str: "text",
    list: "JSON list",
    dict: "JSON object",
    object: "text or JSON",
}

# --- dotted paths into nested params --------------------------------------------------------


def get_path(params: Any, name: str) -> Any:
    """Return the value at a dotted path into nested params, or None."""
    value = params
    for key in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def set_path(params: dict[str, Any], name: str, value: Any) -> None:
    """Set the value at a dotted path, creating the objects on the way."""
    *parents, last = name.split(".")
    node = params
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


def drop_path(params: dict[str, Any], name: str) -> None:
    """Remove the value at a dotted path, and the objects it leaves empty."""
    *parents, last = name.split(".")
    trail = [params]
    for key in parents:
        child = trail[-1].get(key)
        if not isinstance(child, dict):
            return
        trail.append(child)
    trail[-1].pop(last, None)
    for depth in range(len(parents) - 1, -1, -1):
        if trail[depth + 1]:
            break
        trail[depth].pop(parents[depth])


def default_params(parameters: tuple[Param, ...]) -> dict[str, Any]:
    """Return the nested params a new preset starts from: every declared default."""
    params: dict[str, Any] = {}
    for p in parameters:
        if p.default is not None:
            set_path(params, p.name, copy.deepcopy(p.default))
    return params


# --- parameters as form fields -------------------------------------------------------------


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented, and nothing rather than `null`."""

    def to_python(self, value: Any) -> Any:
        # A textarea left blank may still send a line break.
        if isinstance(value, str) and not value.strip():
            value = ""
        return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        if value is None:
            return ""
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


class JSONParamField(PrettyJSONField):
    """A list or dict parameter typed as JSON."""

    def __init__(self, *, expected: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected = expected

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value is not None and not isinstance(value, self.expected):
            raise forms.ValidationError(f"Enter a {TYPE_NAMES[self.expected]}.", code="invalid")


class TextOrJSONField(forms.CharField):
    """Text, or JSON when it starts like a list or an object (chapter marks take either)."""

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if not isinstance(text, str) or not text.startswith(("[", "{")):
            return text
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Enter valid JSON ({exc.msg} at line {exc.lineno}), or text that does not "
                "start with [ or {.",
                code="invalid",
            ) from exc

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | dict):
            return json.dumps(value, ensure_ascii=False, indent=2)
        return value


def code_area(rows: int = 4) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "class": "code", "spellcheck": "false"})


def param_field(p: Param) -> forms.Field:
    """Return the form field for one declared parameter, chosen by its type."""
    # Param help is plain text (it quotes JSON); Django renders help_text unescaped.
    common: dict[str, Any] = {"label": p.label, "help_text": escape(p.help), "required": p.required}
    if p.type is bool:
        # An unticked checkbox means false, never "missing".
        return forms.BooleanField(**{**common, "required": False})
    if p.choices and p.type in (str, int, float):
        blank = [] if p.required else [("", "—")]
        return forms.TypedChoiceField(
            choices=blank + [(c, str(c)) for c in p.choices],
            coerce=p.type,
            empty_value=None,
            **common,
        )
    if p.type in (int, float):
        # Ranges are hints for the browser only: the provider checks them, in its own words.
        attrs = {"step": "1" if p.type is int else "any"}
        if p.min is not None:
            attrs["min"] = f"{p.min:g}"
        if p.max is not None:
            attrs["max"] = f"{p.max:g}"
        number_class = forms.IntegerField if p.type is int else forms.FloatField
        return number_class(widget=forms.NumberInput(attrs=attrs), **common)
    if p.type in (list, dict):
        return JSONParamField(expected=p.type, widget=code_area(), **common)
    if p.type is object:
        return TextOrJSONField(widget=code_area(), empty_value=None, **common)
    return forms.CharField(empty_value=None, **common)


class ParamsForm(forms.Form):
    """One field per parameter a provider declares; made by params_form_class."""

    parameters: tuple[Param, ...] = ()

    def merged(self, base: Any) -> dict[str, Any]:
        """Return base with each field's value at its path; an empty field removes the value."""
        params = copy.deepcopy(base) if isinstance(base, dict) else {}
        for p in self.parameters:
            value = self.cleaned_data.get(p.name)
            if value is None or value == "":
                drop_path(params, p.name)
            else:
                set_path(params, p.name, value)
        return params

    def groups(self) -> list[tuple[str, list[BoundField]]]:
        """Return the fields grouped by the first part of dotted names, in declared order."""
        groups: dict[str, list[BoundField]] = {}
        for p in self.parameters:
            head = p.name.split(".")[0] if "." in p.name else ""
            groups.setdefault(head, []).append(self[p.name])
        return [(capfirst(head.replace("_", " ")), fields) for head, fields in groups.items()]


def params_form_class(kind: str) -> type[ParamsForm]:
    """Return a form class with a field for each parameter the provider declares."""
    provider = get_provider(kind)
    attrs: dict[str, Any] = {p.name: param_field(p) for p in provider.parameters}
    attrs["parameters"] = provider.parameters
    return cast(type[ParamsForm], type(f"{kind.title()}ParamsForm", (ParamsForm,), attrs))


def params_form(kind: str, data: Any = None, *, params: Any) -> ParamsForm:
    """Return the derived parameter form, showing params (or bound to what was typed)."""
    form_class = params_form_class(kind)
    initial: dict[str, Any] = {}
    for p in form_class.parameters:
        # An unset value shows the default, which is what the provider uses in its place.
        value = get_path(params, p.name)
        value = copy.deepcopy(p.default) if value is None else value
        initial[p.name] = bool(value) if p.type is bool else value
    return form_class(data, initial=initial, prefix=PARAM_PREFIX)


def parameter_rows(kind: str) -> list[dict[str, Any]]:
    """Return the provider's declared parameters described for a reference table."""
    rows = []
    for p in get_provider(kind).parameters:
        if p.min is not None and p.max is not None:
            span = f"{p.min:g} to {p.max:g}"
        elif p.min is not None:
            span = f"at least {p.min:g}"
        elif p.max is not None:
            span = f"at most {p.max:g}"
        else:
            span = ""
        rows.append(
            {
                "name": p.name,
                "label": p.label,
                "type": TYPE_NAMES.get(p.type, p.type.__name__),
                "required": p.required,
                "default": "" if p.default is None else json.dumps(p.default),
                "range": span,
                "choices": ", ".join(map(str, p.choices)),
                "help": p.help,
            }
        )
    return rows


# --- the preset form -----------------------------------------------------------------------


class PresetForm(forms.ModelForm):
    """A preset's name, slug and description, with params from the derived fields or the JSON."""

    # Kept out of Meta.fields: clean() derives a blank one from the name and checks it is free.
    slug = forms.SlugField(
        max_length=60, required=False, help_text="Leave empty to make one from the name."
    )
    params = PrettyJSONField(
        label="Advanced (JSON)",
        required=False,
        # The value shown travels back hidden, so an edit can be told from an untouched copy.
        show_hidden_initial=True,
        widget=code_area(rows=12),
        help_text="All the parameters, including those no field above covers. If you edit "
        "this, it is saved instead of the fields above.",
    )

    class Meta:
        model = Preset
        fields = ["name", "description", "params"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args: Any, params_form: ParamsForm, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params_form = params_form
        if not self.is_bound:
            self.initial.setdefault("slug", self.instance.slug)

    @property
    def advanced_edited(self) -> bool:
        """Return whether the Advanced JSON was changed, which makes it win over the fields."""
        return self.is_bound and "params" in self.changed_data

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("name"):
            self.derive_slug(data)
        self.build_params(data)
        return data

    def derive_slug(self, data: dict[str, Any]) -> None:
        """Derive a blank slug from the name and check it is free in the workspace."""
        slug = data.get("slug") or slugify(data["name"])[:60].strip("-")
        if not slug:
            self.add_error("slug", "Give a slug: the name has no letters or digits to make one.")
            return
        taken = Preset.objects.filter(workspace_id=self.instance.workspace_id, slug=slug)
        if taken.exclude(pk=self.instance.pk).exists():
            self.add_error("slug", f"This workspace already has a preset with the slug {slug}.")
            return
        data["slug"] = self.instance.slug = slug

    def build_params(self, data: dict[str, Any]) -> None:
        """Build params from the fields (or the edited JSON); have the provider check them."""
        if "params" in self.errors:
            return  # the edited JSON does not parse
        if self.advanced_edited:
            params = data.get("params")
            params = {} if params is None else params
        elif self.params_form.is_valid():
            params = self.params_form.merged(data.get("params"))
        else:
            self.add_error(None, "Some parameters need fixing; see below.")
            return
        try:
            data["params"] = get_provider(self.instance.provider).validate_params(params)
        except ValueError as exc:
            self.add_error(None, str(exc))


# --- pages ---------------------------------------------------------------------------------


def summarise(kind: str, params: Any) -> str:
    """Return a short line naming what a preset's declared parameters set."""
    parameters = get_provider(kind).parameters if kind in PROVIDERS else ()
    parts = [text for p in parameters if (text := describe(p, get_path(params, p.name)))]
    more = ", …" if len(parts) > SUMMARY_ITEMS else ""
    return ", ".join(parts[:SUMMARY_ITEMS]) + more


def describe(p: Param, value: Any) -> str:
    """Return one parameter's value in a few words, or "" when it sets nothing."""
    # 0 means off or automatic for every number the providers declare: not worth a mention.
    if value in (None, "", False, 0, [], {}):
        return ""
    if value is True:
        return p.label
    if isinstance(value, int | float):
        return f"{p.label} {value:g}"
    if isinstance(value, list):
        formats = [str(v["format"]) for v in value if isinstance(v, dict) and v.get("format")]
        return f"{p.label}: {', '.join(formats) if formats else len(value)}"
    if isinstance(value, dict):
        return f"{p.label}: {', '.join(map(str, value))}"
    return f"{p.label}: {value}"


@login_required
def presets(request: HttpRequest, slug: str) -> HttpResponse:
    """List the workspace's presets and the global ones; admins create, edit and delete."""
    m = get_membership(request, slug)
    visible = (
        presets_visible([m.workspace_id])
        .annotate(job_count=Count("jobs", filter=Q(jobs__workspace_id=m.workspace_id)))
        .order_by(F("workspace_id").asc(nulls_last=True), "name")
    )
    rows = [{"preset": p, "summary": summarise(p.provider, p.params)} for p in visible]
    return render_page(request, "dashboard/presets.html", {"rows": rows}, membership=m)


@login_required
def preset_new(request: HttpRequest, slug: str) -> HttpResponse:
    """Pick a provider, then fill in the form derived from its parameters."""
    m = get_membership(request, slug)
    require_manage(m)
    kind = request.GET.get("provider", "")
    if kind not in PROVIDERS:
        if kind:
            messages.error(request, f"There is no provider {kind!r}; pick one of these.")
        return provider_picker(request, m, status=400 if kind else 200)
    provider = get_provider(kind)
    preset = Preset(
        workspace=m.workspace, provider=kind, params=default_params(provider.parameters)
    )
    return preset_form_page(request, m, preset)


@login_required
def preset_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Edit one of the workspace's presets (global ones are not the workspace's to change)."""
    m = get_membership(request, slug)
    preset = get_object_or_404(m.workspace.presets, pk=pk)
    require_manage(m)
    return preset_form_page(request, m, preset)


@login_required
@require_POST
def preset_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Delete a preset no job has used; jobs keep a reference to the preset they ran."""
    m = get_membership(request, slug)
    preset = get_object_or_404(m.workspace.presets, pk=pk)
    require_manage(m)
    used = preset.jobs.count()
    refusal = f"{preset.name} is used by {used} job(s), so it cannot be deleted."
    if used:
        messages.error(request, refusal)
        return redirect("dashboard:presets", slug=slug)
    defaults = list(Dataset.objects.filter(default_preset=preset).values_list("name", flat=True))
    try:
        preset.delete()
    except ProtectedError:  # a job started in between
        messages.error(request, refusal)
        return redirect("dashboard:presets", slug=slug)
    note = f" {', '.join(defaults)} now ha{'ve' if len(defaults) > 1 else 's'} no default preset."
    messages.success(request, f"Deleted {preset.name}." + (note if defaults else ""))
    return redirect("dashboard:presets", slug=slug)


def provider_picker(request: HttpRequest, m: Membership, *, status: int = 200) -> HttpResponse:
    connected = set(m.workspace.provider_accounts.values_list("provider", flat=True))
    choices = []
    for kind, (label, _) in PROVIDERS.items():
        provider = get_provider(kind)
        choices.append(
            {
                "kind": kind,
                "label": label,
                "inline": provider.inline,
                "connected": kind in connected,
                "parameters": provider.parameters,
            }
        )
    context = {"choices": choices}
    return render_page(request, "dashboard/presets_new.html", context, membership=m, status=status)


def preset_form_page(request: HttpRequest, m: Membership, preset: Preset) -> HttpResponse:
    """Show the preset form, or save what was posted and go back to the list."""
    kind = preset.provider
    status = 200
    if request.method == "POST":
        pform = params_form(kind, request.POST, params=preset.params)
        form = PresetForm(request.POST, instance=preset, params_form=pform)
        if form.is_valid():
            created = preset.pk is None
            preset = form.save()
            messages.success(request, f"{'Created' if created else 'Saved'} {preset.name}.")
            return redirect("dashboard:presets", slug=m.workspace.slug)
        if form.advanced_edited and isinstance(form.cleaned_data.get("params"), dict):
            # The JSON won over the fields: show the fields as that JSON sets them.
            pform = params_form(kind, params=form.cleaned_data["params"])
        status = 400
    else:
        pform = params_form(kind, params=preset.params)
        form = PresetForm(instance=preset, params_form=pform)
    if preset.pk:
        action = reverse("dashboard:preset-edit", args=[m.workspace.slug, preset.pk])
    else:
        action = reverse("dashboard:preset-new", args=[m.workspace.slug]) + f"?provider={kind}"
    context = {
        "form": form,
        "params_form": pform,
        "preset": preset,
        "provider": get_provider(kind),
        "reference": parameter_rows(kind),
        "action": action,
    }
    return render_page(request, "dashboard/presets_form.html", context, membership=m, status=status)
