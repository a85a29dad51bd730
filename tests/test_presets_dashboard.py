"""Presets in the dashboard: forms derived from each provider's declared parameters."""

from __future__ import annotations

import json
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Workspace
from media_jobs.models import Job, MediaItem, Preset
from media_jobs.providers import get_provider
from tests.test_dashboard import login, seeded_preset, text, url

# What the local form saves once the engine has normalised it: every algorithm named.
TALK_SHOW = {
    "algorithms": {
        "filtering": True,
        "leveler": False,
        "normloudness": True,
        "loudnesstarget": -18.0,
        "maxpeak": -1.5,
        "denoise": True,
        "denoiseamount": 12.0,
        "silence_cutter": False,
        "silence_threshold_s": None,
        "gate": False,
        "crossgate": False,
    },
    "output_files": [
        {"format": "mp3", "bitrate": 128, "filename": None, "suffix": "", "mono_mixdown": False}
    ],
    "video": {"start_time": 0.0, "duration": None},
    "metadata": {},
}


class FormValues(HTMLParser):
    """Collect what a browser would submit from a page's form controls."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.textarea: str | None = None
        self.select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type") or "text"
            if kind == "checkbox":
                if "checked" in a:
                    self.values[name] = a.get("value") or "on"
            elif kind not in ("submit", "button"):
                self.values[name] = a.get("value") or ""
        elif tag == "textarea" and name:
            self.textarea = name
            self.values[name] = ""
        elif tag == "select" and name:
            self.select = name
        elif (
            tag == "option" and self.select and ("selected" in a or self.select not in self.values)
        ):
            # A browser sends the selected option, or the first when none is.
            self.values[self.select] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self.textarea = None
        elif tag == "select":
            self.select = None

    def handle_data(self, data: str) -> None:
        if self.textarea:
            # Browsers drop the line break that opens a textarea's content.
            if not self.values[self.textarea]:
                data = data.removeprefix("\n")
            self.values[self.textarea] += data


def form_values(response) -> dict[str, str]:
    parser = FormValues()
    parser.feed(text(response))
    return parser.values


def new_url(kind: str, slug: str = "acme") -> str:
    return url("preset-new", slug=slug) + f"?provider={kind}"


def local_preset(workspace: Workspace, slug: str, params: dict[str, Any]) -> Preset:
    return Preset.objects.create(
        workspace=workspace,
        slug=slug,
        name=slug.replace("-", " ").title(),
        provider="local",
        params=get_provider("local").validate_params(params),
    )


@pytest.fixture
def talk(acme) -> Preset:
    return local_preset(
        acme,
        "talk",
        {
            "algorithms": {"normloudness": True, "loudnesstarget": -16},
            "output_files": [{"format": "mp3", "bitrate": 96}],
        },
    )


@pytest.fixture
def podcast(db) -> Preset:
    return seeded_preset("podcast")


def fill_talk_show(values: dict[str, str]) -> dict[str, str]:
    """Fill the local form's fields as alice would for a talk show."""
    values = dict(values, name="Talk show", slug="")
    values["param-algorithms.filtering"] = "on"
    values["param-algorithms.normloudness"] = "on"
    values["param-algorithms.denoise"] = "on"
    values["param-algorithms.denoiseamount"] = "12"
    values["param-algorithms.loudnesstarget"] = "-18"
    values["param-algorithms.maxpeak"] = "-1.5"
    values.pop("param-algorithms.leveler", None)  # unticked
    return values


# --- access ----------------------------------------------------------------------------------


def test_charlie_gets_404_on_every_presets_page(client, charlie, alice, talk, podcast):
    before = dict(Preset.objects.filter(pk=talk.pk).values().get())
    login(client, charlie)
    assert client.get(url("presets")).status_code == 404
    assert client.get(url("preset-new")).status_code == 404
    assert client.get(new_url("local")).status_code == 404
    assert client.post(new_url("local"), {"name": "Sneaky"}).status_code == 404
    for slug in ("acme", "other"):
        for pk in (talk.pk, podcast.pk):
            assert client.get(url("preset-edit", slug=slug, pk=pk)).status_code == 404
            edit = client.post(url("preset-edit", slug=slug, pk=pk), {"name": "Sneaky"})
            assert edit.status_code == 404
            assert client.post(url("preset-delete", slug=slug, pk=pk)).status_code == 404
    # His own workspace answers, so the 404s are about scoping.
    assert client.get(url("presets", slug="other")).status_code == 200
    assert dict(Preset.objects.filter(pk=talk.pk).values().get()) == before
    assert not Preset.objects.filter(name="Sneaky").exists()


def test_bob_a_member_sees_the_presets_but_cannot_change_them(client, bob, talk, podcast):
    login(client, bob)
    page = client.get(url("presets"))
    assert page.status_code == 200
    body = text(page)
    assert "Talk" in body
    assert "Podcast" in body
    assert '<span class="badge">global</span>' in body
    assert "Loudness target (LUFS) -16" in body  # the params summary
    assert url("preset-new") not in body
    assert url("preset-edit", pk=talk.pk) not in body
    assert client.get(url("preset-new")).status_code == 403
    assert client.get(new_url("local")).status_code == 403
    assert client.post(new_url("local"), {"name": "Bobs"}).status_code == 403
    assert client.get(url("preset-edit", pk=talk.pk)).status_code == 403
    assert client.post(url("preset-edit", pk=talk.pk), {"name": "Bobs"}).status_code == 403
    assert client.post(url("preset-delete", pk=talk.pk)).status_code == 403
    talk.refresh_from_db()
    assert talk.name == "Talk"
    assert not Preset.objects.filter(name="Bobs").exists()


def test_global_presets_are_read_only_even_for_the_owner(client, alice, podcast):
    login(client, alice)
    body = text(client.get(url("presets")))
    assert "Podcast" in body
    assert url("preset-edit", pk=podcast.pk) not in body
    assert client.get(url("preset-edit", pk=podcast.pk)).status_code == 404
    assert client.post(url("preset-delete", pk=podcast.pk)).status_code == 404
    assert Preset.objects.filter(pk=podcast.pk).exists()


# --- the derived form ------------------------------------------------------------------------


def test_the_new_preset_page_lists_the_providers(client, alice):
    login(client, alice)
    body = text(client.get(url("preset-new")))
    for kind in ("local", "auphonic", "dolby", "apyhub", "audioscrape", "respeecher"):
        assert f"?provider={kind}" in body
    assert client.get(new_url("nope")).status_code == 400


def test_alice_creates_a_local_preset_through_the_derived_form(client, alice, acme):
    login(client, alice)
    page = client.get(new_url("local"))
    assert page.status_code == 200
    body = text(page)
    assert 'type="checkbox" name="param-algorithms.filtering"' in body
    assert 'name="param-algorithms.loudnesstarget"' in body
    assert 'max="-13" min="-31"' in body or 'min="-31" max="-13"' in body
    values = form_values(page)
    assert values["param-algorithms.loudnesstarget"] == "-16.0"  # the declared default
    assert json.loads(values["param-output_files"]) == [{"format": "mp3", "bitrate": 128}]

    response = client.post(new_url("local"), fill_talk_show(values))
    assert response.status_code == 302
    assert response["Location"] == url("presets")
    preset = Preset.objects.get(workspace=acme, slug="talk-show")
    assert preset.provider == "local"
    assert preset.params == TALK_SHOW
    assert get_provider("local").validate_params(preset.params) == preset.params
    assert "Created Talk show." in text(client.get(url("presets")))


def test_an_out_of_range_value_is_refused_with_the_providers_message(client, alice):
    login(client, alice)
    values = fill_talk_show(form_values(client.get(new_url("local"))))
    values["param-algorithms.loudnesstarget"] = "-50"
    response = client.post(new_url("local"), values)
    assert response.status_code == 400
    body = text(response)
    assert "algorithms.loudnesstarget: must be between -31 and -13 LUFS, got -50" in body
    kept = form_values(response)
    assert kept["param-algorithms.loudnesstarget"] == "-50"
    assert kept["param-algorithms.maxpeak"] == "-1.5"
    assert kept["param-algorithms.filtering"] == "on"
    assert "param-algorithms.leveler" not in kept
    assert kept["name"] == "Talk show"
    assert not Preset.objects.filter(name="Talk show").exists()


def test_an_apyhub_preset_is_created_through_its_derived_fields(client, alice, acme):
    login(client, alice)
    page = client.get(new_url("apyhub"))
    body = text(page)
    assert '<select name="param-output_format"' in body
    assert 'type="checkbox" name="param-persistent"' in body
    values = form_values(page)
    values.update(
        {
            "name": "Clip audio",
            "param-start_time": "12.5",
            "param-duration": "30",
            "param-output_format": "wav",
            "param-persistent": "on",
        }
    )
    response = client.post(new_url("apyhub"), values)
    assert response.status_code == 302
    preset = Preset.objects.get(workspace=acme, slug="clip-audio")
    assert preset.provider == "apyhub"
    assert preset.params == {
        "start_time": 12.5,
        "duration": 30.0,
        "output_format": "wav",
        "persistent": True,
    }


def test_a_respeecher_preset_takes_its_voices_as_json(client, alice, acme):
    login(client, alice)
    values = form_values(client.get(new_url("respeecher")))
    voice = str(uuid.uuid4())
    values.update({"name": "Narrator", "param-voices": "[oops", "param-label": "Episode"})
    refused = client.post(new_url("respeecher"), values)
    assert refused.status_code == 400
    assert "Enter a valid JSON." in text(refused)
    assert form_values(refused)["param-voices"].strip() == "[oops"

    values["param-voices"] = json.dumps([voice])
    assert client.post(new_url("respeecher"), values).status_code == 302
    params = Preset.objects.get(workspace=acme, slug="narrator").params
    assert params["voices"] == [{"voice_id": voice}]
    assert params["label"] == "Episode"


def test_the_advanced_json_wins_when_edited(client, alice, talk):
    login(client, alice)
    values = form_values(client.get(url("preset-edit", pk=talk.pk)))
    assert values["param-algorithms.loudnesstarget"] == "-16.0"
    values["param-algorithms.loudnesstarget"] = "-18"  # ignored: the JSON was edited
    advanced = json.loads(values["params"])
    advanced["algorithms"]["loudnesstarget"] = -20
    advanced["metadata"] = {"artist": "Acme Radio"}
    values["params"] = json.dumps(advanced)
    response = client.post(url("preset-edit", pk=talk.pk), values)
    assert response.status_code == 302
    talk.refresh_from_db()
    assert talk.params["algorithms"]["loudnesstarget"] == -20.0
    assert talk.params["metadata"] == {"artist": "Acme Radio"}


def test_an_untouched_advanced_json_keeps_what_no_field_covers(client, alice, acme):
    preset = local_preset(
        acme,
        "trimmed",
        {
            "algorithms": {"silence_cutter": True, "silence_threshold_s": 2.5},
            "metadata": {"artist": "Acme Radio"},
        },
    )
    login(client, alice)
    values = form_values(client.get(url("preset-edit", pk=preset.pk)))
    values["param-algorithms.normloudness"] = "on"
    values["param-algorithms.loudnesstarget"] = "-23"
    assert client.post(url("preset-edit", pk=preset.pk), values).status_code == 302
    preset.refresh_from_db()
    assert preset.params["algorithms"]["silence_threshold_s"] == 2.5
    assert preset.params["algorithms"]["loudnesstarget"] == -23.0
    assert preset.params["metadata"] == {"artist": "Acme Radio"}


def test_a_slug_must_be_free_in_the_workspace(client, alice, talk):
    login(client, alice)
    values = form_values(client.get(new_url("local")))
    values.update(name="Talk")
    response = client.post(new_url("local"), values)
    assert response.status_code == 400
    assert "already has a preset with the slug talk" in text(response)
    assert Preset.objects.filter(slug="talk").count() == 1


# --- deleting --------------------------------------------------------------------------------


def test_a_preset_in_use_cannot_be_deleted(client, alice, acme, talk):
    item = MediaItem.objects.create(
        dataset=acme.datasets.get(name="inbox"), title="Ep", created_by=alice.user
    )
    Job.objects.create(
        workspace=acme, item=item, preset=talk, params=talk.params, created_by=alice.user
    )
    spare = local_preset(acme, "spare", {})
    login(client, alice)
    response = client.post(url("preset-delete", pk=talk.pk), follow=True)
    assert "Talk is used by 1 job(s), so it cannot be deleted." in text(response)
    assert Preset.objects.filter(pk=talk.pk).exists()

    response = client.post(url("preset-delete", pk=spare.pk), follow=True)
    assert "Deleted Spare." in text(response)
    assert not Preset.objects.filter(pk=spare.pk).exists()


# --- admin -----------------------------------------------------------------------------------


def test_the_admin_change_form_shows_the_declared_parameters(admin_client, talk):
    page = admin_client.get(reverse("admin:media_jobs_preset_change", args=[talk.pk]))
    assert page.status_code == 200
    body = text(page)
    assert "Parameters the provider accepts" in body
    assert '<table class="preset-parameters">' in body
    assert "<code>algorithms.loudnesstarget</code>" in body
    assert "-31 to -13" in body
    # A new preset has no provider yet: every provider's parameters are shown.
    add = text(admin_client.get(reverse("admin:media_jobs_preset_add")))
    assert "<code>voices</code> (required)" in add
    assert "<code>algorithms.maxpeak</code>" in add


def test_the_admin_refuses_params_the_provider_rejects(admin_client: Client, acme, talk):
    change = reverse("admin:media_jobs_preset_change", args=[talk.pk])
    bad = dict(talk.params, algorithms={"normloudness": True, "loudnesstarget": -50})
    response = admin_client.post(
        change,
        {
            "workspace": acme.pk,
            "name": "Talk",
            "slug": "talk",
            "description": "",
            "provider": "local",
            "params": json.dumps(bad),
        },
    )
    assert response.status_code == 200
    assert "must be between -31 and -13 LUFS, got -50" in text(response)
    talk.refresh_from_db()
    assert talk.params["algorithms"]["loudnesstarget"] == -16.0
