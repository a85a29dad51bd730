"""API authentication, workspace scoping and roles: charlie gets 404, viewers can't write."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from media_jobs.models import Dataset, Job, MediaItem, Preset

pytestmark = pytest.mark.django_db


def test_it_refuses_requests_without_a_key():
    assert APIClient().get("/api/v1/datasets").status_code in (401, 403)


def test_it_refuses_an_unknown_key():
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer mh_deadbeef.not-a-real-key")
    assert api.get("/api/v1/me").status_code == 401


def test_it_refuses_a_revoked_key(alice):
    api_key_revoke(key=ApiKey.objects.get(user=alice.user))
    assert alice.api.get("/api/v1/me").status_code == 401


def test_it_stores_only_a_hash_and_records_last_use(alice):
    key = ApiKey.objects.get(user=alice.user)
    assert alice.key.startswith("mh_") and alice.key.startswith(key.prefix)
    assert alice.key not in (key.key_hash, key.prefix)
    assert key.last_used_at is None
    assert alice.api.get("/api/v1/me").status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None and key.last_used_at <= timezone.now()


def test_it_stops_a_key_whose_owner_left_the_workspace(alice, bob):
    bob.user.memberships.all().delete()
    assert bob.api.get("/api/v1/datasets").json()["results"] == []


def test_me_lists_the_keys_workspace_and_role(bob, charlie):
    body = bob.api.get("/api/v1/me").json()
    assert body["email"] == "bob@example.com"
    assert body["workspaces"] == [{"slug": "acme", "name": "Acme", "role": "member"}]


def test_a_key_never_grants_more_than_its_role(alice, acme):
    from accounts.services import api_key_create

    _, raw = api_key_create(workspace=acme, user=alice.user, role="viewer")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    r = api.post("/api/v1/datasets", {"name": "more"}, format="json")
    assert r.status_code == 403


def test_every_workspace_gets_an_inbox(alice, charlie):
    names = [d["name"] for d in alice.api.get("/api/v1/datasets").json()["results"]]
    assert names == ["inbox"]
    assert Dataset.objects.filter(workspace__slug="other", name="inbox").exists()


def test_lists_are_scoped_to_the_callers_workspaces(alice, charlie):
    ids = {d["id"] for d in charlie.api.get("/api/v1/datasets").json()["results"]}
    assert ids == set(Dataset.objects.filter(workspace__slug="other").values_list("id", flat=True))


def test_charlie_gets_404_for_alices_dataset(alice, charlie):
    inbox = Dataset.objects.get(workspace__slug="acme", name="inbox")
    assert charlie.api.get(f"/api/v1/datasets/{inbox.pk}").status_code == 404
    assert charlie.api.get(f"/api/v1/datasets/{inbox.pk}/items").status_code == 404
    r = charlie.api.post(
        f"/api/v1/datasets/{inbox.pk}/items", {"audio_url": "https://x.test/a.mp3"}
    )
    assert r.status_code == 404
    r = charlie.api.patch(f"/api/v1/datasets/{inbox.pk}", {"name": "mine"}, format="json")
    assert r.status_code == 404


def test_charlie_cannot_create_in_alices_workspace(alice, charlie):
    r = charlie.api.post("/api/v1/datasets", {"name": "x", "workspace": "acme"}, format="json")
    assert r.status_code == 404
    r = charlie.api.post(
        "/api/v1/presets",
        {"name": "x", "slug": "x", "workspace": "acme", "params": {}},
        format="json",
    )
    assert r.status_code == 404


def test_charlie_gets_404_for_alices_items_jobs_and_outputs(alice, charlie, acme):
    inbox = acme.datasets.get(name="inbox")
    item = MediaItem.objects.create(dataset=inbox, title="secret")
    preset = Preset.objects.get(workspace=None, slug="podcast")
    job = Job.objects.create(workspace=acme, item=item, preset=preset, stage="saved")
    for url in (
        f"/api/v1/items/{item.pk}",
        f"/api/v1/items/{item.pk}/download",
        f"/api/v1/jobs/{job.pk}",
    ):
        assert charlie.api.get(url).status_code == 404, url
    assert charlie.api.post(f"/api/v1/jobs/{job.pk}/cancel").status_code == 404
    assert charlie.api.post(f"/api/v1/jobs/{job.pk}/start").status_code == 404
    r = charlie.api.post("/api/v1/jobs", {"item": item.pk, "preset": "podcast"}, format="json")
    assert r.status_code == 404
    assert charlie.api.get("/api/v1/jobs").json()["results"] == []
    assert charlie.api.get("/api/v1/items").json()["results"] == []
    job.refresh_from_db()
    assert job.status == "pending"


def test_creating_takes_the_workspace_slug_when_the_caller_has_several(alice, charlie, acme):
    from accounts.models import Membership

    Membership.objects.create(user=alice.user, workspace=charlie.user.memberships.get().workspace)
    alice.api.force_authenticate(user=alice.user)  # the session sees both workspaces
    r = alice.api.post("/api/v1/datasets", {"name": "podcasts"}, format="json")
    assert r.status_code == 400
    assert "workspace" in r.json()
    r = alice.api.post("/api/v1/datasets", {"name": "podcasts", "workspace": "acme"}, format="json")
    assert r.status_code == 201
    assert r.json()["workspace"] == "acme"


def test_viewer_reads_but_cannot_write(alice, victor, acme):
    inbox = acme.datasets.get(name="inbox")
    assert victor.api.get(f"/api/v1/datasets/{inbox.pk}").status_code == 200
    assert victor.api.post("/api/v1/datasets", {"name": "x"}, format="json").status_code == 403
    r = victor.api.post(
        f"/api/v1/datasets/{inbox.pk}/items",
        {"audio_url": "https://example.com/a.mp3"},
        format="json",
    )
    assert r.status_code == 403
    r = victor.api.post(
        "/api/v1/simple/jobs", {"preset": "podcast", "input_url": "https://e.com/a.wav"}
    )
    assert r.status_code == 403
    assert not MediaItem.objects.exists()


def test_members_create_datasets_but_only_admins_manage_presets(bob, alice):
    r = bob.api.post(
        "/api/v1/datasets",
        {"name": "interviews", "allowed_formats": ["wav", "mp3"], "max_file_size": 10_000_000},
        format="json",
    )
    assert r.status_code == 201, r.content
    assert r.json()["allowed_formats"] == ["wav", "mp3"]
    preset = {"name": "Loud", "slug": "loud", "params": {"algorithms": {"loudnesstarget": -14}}}
    assert bob.api.post("/api/v1/presets", preset, format="json").status_code == 403
    r = alice.api.post("/api/v1/presets", preset, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["workspace"] == "acme"


def test_dataset_formats_are_validated(bob):
    r = bob.api.post(
        "/api/v1/datasets", {"name": "x", "allowed_formats": ["wav", "exe"]}, format="json"
    )
    assert r.status_code == 400
    assert "exe" in str(r.json()["allowed_formats"])


def test_presets_list_shows_the_seeded_globals(alice):
    slugs = {p["slug"] for p in alice.api.get("/api/v1/presets").json()["results"]}
    assert {"podcast", "broadcast", "extract-audio"} <= slugs
    podcast = next(
        p for p in alice.api.get("/api/v1/presets").json()["results"] if p["slug"] == "podcast"
    )
    assert podcast["params"]["algorithms"]["loudnesstarget"] == -16
    assert podcast["params"]["algorithms"]["maxpeak"] == -1
    assert podcast["params"]["output_files"][0]["format"] == "mp3"


def test_global_presets_are_read_only_through_the_api(alice):
    podcast = Preset.objects.get(workspace=None, slug="podcast")
    r = alice.api.patch(f"/api/v1/presets/{podcast.pk}", {"name": "Mine"}, format="json")
    assert r.status_code == 403
    podcast.refresh_from_db()
    assert podcast.name == "Podcast"


def test_invalid_preset_params_are_refused_with_a_message(alice):
    r = alice.api.post(
        "/api/v1/presets",
        {"name": "Bad", "slug": "bad", "params": {"output_files": [{"format": "exe"}]}},
        format="json",
    )
    assert r.status_code == 400
    assert "exe" in str(r.json())


def test_charlie_cannot_see_alices_workspace_presets(alice, charlie, acme):
    Preset.objects.create(workspace=acme, slug="private", name="Private", params={})
    slugs = {p["slug"] for p in charlie.api.get("/api/v1/presets").json()["results"]}
    assert "private" not in slugs
    pk = Preset.objects.get(slug="private").pk
    assert charlie.api.get(f"/api/v1/presets/{pk}").status_code == 404


def test_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def test_charlie_cannot_run_simple_jobs_in_alices_workspace(alice, charlie, tmp_path):
    from media_jobs import samples

    wav = samples.speech_like(tmp_path / "a.wav", seconds=1)
    with wav.open("rb") as fh:
        r = charlie.api.post(
            "/api/v1/simple/jobs", {"input_file": fh, "preset": "podcast", "workspace": "acme"}
        )
    assert r.status_code == 404
    acme_inbox = Dataset.objects.get(workspace__slug="acme", name="inbox")
    with wav.open("rb") as fh:
        r = charlie.api.post(
            "/api/v1/simple/jobs", {"input_file": fh, "preset": "podcast", "dataset": acme_inbox.pk}
        )
    assert r.status_code == 404  # his own workspace has no dataset with that id
    assert not MediaItem.objects.exists()
