"""Management commands: create_api_key prints only the key; demo seeds a usable workspace."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiKey, Membership, Workspace
from media_jobs.models import Job, MediaItem

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_api_key_prints_only_a_working_key(alice):
    raw = run("create_api_key", "--email", "alice@example.com", "--workspace", "acme").strip()
    assert raw.startswith("mh_") and "\n" not in raw
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/me").json()["workspaces"][0]["slug"] == "acme"
    assert ApiKey.objects.filter(user=alice.user).count() == 2  # the fixture's and this one


def test_create_api_key_with_a_role(alice):
    raw = run(
        "create_api_key", "--email", "alice@example.com", "--workspace", "acme", "--role", "viewer"
    )
    assert ApiKey.objects.get(prefix=raw.split(".")[0]).role == "viewer"


def test_create_api_key_refuses_unknown_users_and_workspaces_without_create(acme):
    with pytest.raises(CommandError, match="--create"):
        run("create_api_key", "--email", "nobody@example.com", "--workspace", "acme")
    with pytest.raises(CommandError, match="--create"):
        run("create_api_key", "--email", "alice@example.com", "--workspace", "nowhere")


def test_create_api_key_creates_user_and_workspace_when_asked(db):
    raw = run("create_api_key", "--email", "Dana@Example.com", "--workspace", "studio", "--create")
    ws = Workspace.objects.get(slug="studio")
    m = Membership.objects.get(workspace=ws)
    assert m.user.email == "dana@example.com" and m.role == "owner"
    assert ws.datasets.filter(name="inbox").exists()
    assert ApiKey.objects.get(prefix=raw.strip().split(".")[0]).workspace == ws


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_demo_seeds_a_user_workspace_and_media_once(media_root):
    out = run("demo")
    assert "demo@example.com" in out
    ws = Workspace.objects.get(slug="demo")
    items = MediaItem.objects.filter(dataset__workspace=ws)
    assert {i.original_filename for i in items} == {"interview.wav", "clip.mp4"}
    assert all(i.status in ("queued", "processing", "published") and i.input_file for i in items)
    assert Job.objects.filter(workspace=ws, preset__slug="podcast").count() == 1
    run("demo")  # again: nothing doubles
    assert MediaItem.objects.filter(dataset__workspace=ws).count() == 2
    assert Job.objects.filter(workspace=ws).count() == 1
