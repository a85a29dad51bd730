"""The team dashboard: pages, htmx partials, 404 for outsiders, 403 for viewers."""

from __future__ import annotations

import importlib
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiKey, Invitation, Membership
from accounts.services import workspace_create
from media_jobs.models import Dataset, Job, JobOutput, MediaItem, Preset

SEEDED = importlib.import_module("media_jobs.migrations.0002_seed_presets_and_schedule").PRESETS
HX = {"HTTP_HX_REQUEST": "true"}


def seeded_preset(slug: str) -> Preset:
    """Return a global preset, recreating it when a transactional test flushed the seed data."""
    spec = next(p for p in SEEDED if p["slug"] == slug)
    preset, _ = Preset.objects.get_or_create(
        workspace=None, slug=slug, defaults={**spec, "provider": "local"}
    )
    return preset


@pytest.fixture
def podcast(db) -> Preset:
    return seeded_preset("podcast")


@pytest.fixture
def inbox(acme) -> Dataset:
    return acme.datasets.get(name="inbox")


@pytest.fixture
def item(inbox, alice) -> MediaItem:
    return MediaItem.objects.create(
        dataset=inbox,
        title="Episode one",
        original_filename="episode-one.wav",
        duration=125.4,
        channels=2,
        sample_rate=44100,
        status=MediaItem.Status.QUEUED,
        created_by=alice.user,
    )


@pytest.fixture
def job(item, podcast, alice) -> Job:
    return Job.objects.create(
        workspace_id=item.dataset.workspace_id,
        item=item,
        preset=podcast,
        params=podcast.params,
        stage="queued",
        created_by=alice.user,
    )


def login(client: Client, person) -> Client:
    client.force_login(person.user)
    return client


def text(response) -> str:
    return response.content.decode()


def url(name: str, slug: str = "acme", **kwargs) -> str:
    return reverse(f"dashboard:{name}", kwargs={"slug": slug, **kwargs})


# --- login and home --------------------------------------------------------------------------


def test_it_renders_the_login_page_and_logs_in(client, alice):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'type="email"' in text(page)
    assert 'name="password"' in text(page)

    bad = client.post(reverse("login"), {"username": alice.user.email, "password": "wrong"})
    assert bad.status_code == 200
    assert "enter a correct" in text(bad).lower()

    response = client.post(
        reverse("login"), {"username": alice.user.email, "password": "pw-alice@example.com"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")
    # Alice has exactly one workspace, so home goes straight to it.
    home = client.get(reverse("dashboard:home"))
    assert home.status_code == 302
    assert home["Location"] == url("workspace")


def test_it_sends_anonymous_visitors_to_login(client, acme):
    response = client.get(url("workspace"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_logs_out_with_a_post(client, alice):
    login(client, alice)
    page = client.get(url("workspace"))
    assert f'action="{reverse("logout")}"' in text(page)
    assert alice.user.email in text(page)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(url("workspace")).status_code == 302  # back to the login page


def test_it_lists_the_workspaces_on_home(client, alice):
    workspace_create(name="Beta Studio", owner=alice.user, slug="beta")
    login(client, alice)
    response = client.get(reverse("dashboard:home"))
    assert response.status_code == 200
    body = text(response)
    assert "Acme" in body and "Beta Studio" in body
    assert f'href="{url("workspace")}"' in body
    assert f'href="{url("workspace", slug="beta")}"' in body


def test_it_creates_a_workspace_from_home(client, alice):
    login(client, alice)
    response = client.post(reverse("dashboard:workspaces"), {"name": "Gamma Radio"})
    assert response.status_code == 302
    assert response["Location"] == url("workspace", slug="gamma-radio")
    membership = Membership.objects.get(user=alice.user, workspace__slug="gamma-radio")
    assert membership.role == "owner"
    assert membership.workspace.datasets.filter(name="inbox").exists()
    page = client.get(response["Location"])
    assert "Gamma Radio" in text(page)


# --- workspace, dataset, item, job pages -----------------------------------------------------


def test_it_shows_the_workspace_overview(client, alice, item, job):
    login(client, alice)
    body = text(client.get(url("workspace")))
    assert "<html" in body
    assert re.search(r'href="/w/acme/datasets/\d+/">inbox</a>', body)
    assert re.search(r'<td class="num">1</td>', body)  # the inbox's item count
    assert "Episode one" in body
    assert 'class="badge s-queued"' in body
    assert f'href="{url("job", pk=job.pk)}"' in body
    assert '<progress max="100" value="0"' in body


def test_it_lists_a_datasets_items_with_probe_facts(client, bob, item, podcast):
    login(client, bob)
    body = text(client.get(url("dataset", pk=item.dataset_id)))
    assert "Episode one" in body
    assert "2:05" in body  # 125.4 s
    assert "44100 Hz" in body
    # Items without a stored input can't be run.
    assert "no stored input" in body
    item.input_file.name = "workspaces/1/items/1/input/episode-one.wav"
    item.save()
    body = text(client.get(url("dataset", pk=item.dataset_id)))
    assert f'action="{url("item-run", pk=item.pk)}"' in body
    assert f'<option value="{podcast.pk}"' in body


def test_it_runs_a_preset_on_an_item(
    client, bob, item, podcast, monkeypatch, django_capture_on_commit_callbacks
):
    enqueued: list[int] = []
    monkeypatch.setattr("media_jobs.tasks.enqueue_run_job", enqueued.append)
    item.input_file.name = "workspaces/1/items/1/input/episode-one.wav"
    item.save()
    login(client, bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("item-run", pk=item.pk), {"preset": podcast.pk})
    job = Job.objects.get(item=item)
    assert response.status_code == 302
    assert response["Location"] == url("job", pk=job.pk)
    assert job.created_by == bob.user
    assert job.preset == podcast
    assert enqueued == [job.pk]  # queued once the transaction committed


def test_it_shows_an_item_with_its_jobs(client, alice, item, job):
    login(client, alice)
    body = text(client.get(url("item", pk=item.pk)))
    assert "episode-one.wav" in body
    assert "44100 Hz" in body
    assert f'href="{url("job", pk=job.pk)}"' in body
    assert 'hx-trigger="every 2s"' in body  # its job is still pending


def test_it_renders_job_statistics_robustly(client, alice, job):
    login(client, alice)
    # Nothing recorded yet.
    body = text(client.get(url("job", pk=job.pk)))
    assert "Pending" in body
    assert "Loudness" not in body
    # Partial statistics: what is there shows, the rest is a dash.
    job.statistics = {"input": {"integrated": -27.345}, "output": "garbage", "gain": 11.3}
    job.status = Job.Status.SUCCESS
    job.save()
    body = text(client.get(url("job", pk=job.pk)))
    assert "-27.3" in body
    assert "+11.3" in body
    assert "—" in body


# --- scoping: outsiders get 404 --------------------------------------------------------------

OBJECT_PAGES = ["dataset", "item", "job"]


def object_ids(item, job) -> dict[str, int]:
    return {"dataset": item.dataset_id, "item": item.pk, "job": job.pk}


@pytest.mark.parametrize("page", ["workspace", "upload", "members"])
@pytest.mark.parametrize("headers", [{}, HX], ids=["page", "htmx"])
def test_charlie_gets_404_for_alices_workspace_pages(client, charlie, acme, page, headers):
    login(client, charlie)
    assert client.get(url(page), **headers).status_code == 404
    # His own workspace answers, so the 404 is about scoping.
    assert client.get(url(page, slug="other"), **headers).status_code == 200


@pytest.mark.parametrize("page", OBJECT_PAGES)
def test_charlie_gets_404_for_alices_objects(client, charlie, item, job, page):
    login(client, charlie)
    pk = object_ids(item, job)[page]
    assert client.get(url(page, pk=pk)).status_code == 404
    assert client.get(url(page, slug="other", pk=pk)).status_code == 404
    assert client.get(url(page, slug="other", pk=pk), **HX).status_code == 404


@pytest.mark.parametrize("page", OBJECT_PAGES)
def test_an_object_under_another_of_your_workspaces_is_404(client, alice, item, job, page):
    workspace_create(name="Beta", owner=alice.user, slug="beta")
    login(client, alice)
    pk = object_ids(item, job)[page]
    assert client.get(url(page, pk=pk)).status_code == 200
    assert client.get(url(page, slug="beta", pk=pk)).status_code == 404


def test_charlie_gets_404_for_writes_in_alices_workspace(client, charlie, alice, bob, item, job):
    key = ApiKey.objects.filter(user=bob.user).first()
    bob_membership = Membership.objects.get(user=bob.user, workspace__slug="acme")
    login(client, charlie)
    for slug in ("acme", "other"):
        assert client.post(url("job-cancel", slug=slug, pk=job.pk)).status_code == 404
        assert client.post(url("item-run", slug=slug, pk=item.pk), {}).status_code == 404
        assert client.post(url("key-revoke", slug=slug, pk=key.pk)).status_code == 404
        remove = url("member-remove", slug=slug, pk=bob_membership.pk)
        assert client.post(remove).status_code == 404
    assert client.post(url("upload"), {"title": "x"}).status_code == 404
    assert (
        client.post(url("invite"), {"email": "x@example.com", "role": "member"}).status_code == 404
    )
    assert client.post(url("key-create"), {"name": "x", "role": "member"}).status_code == 404
    job.refresh_from_db()
    key.refresh_from_db()
    assert job.status == Job.Status.PENDING
    assert key.revoked_at is None
    assert Membership.objects.filter(pk=bob_membership.pk).exists()


# --- roles: viewers read only ----------------------------------------------------------------


def test_victor_sees_the_pages_but_no_write_controls(client, victor, item, job):
    login(client, victor)
    overview = text(client.get(url("workspace")))
    assert "Episode one" in overview
    assert "Upload media" not in overview
    upload = client.get(url("upload"))
    assert upload.status_code == 200
    assert 'enctype="multipart/form-data"' not in text(upload)
    assert "not upload" in text(upload)
    job_page = text(client.get(url("job", pk=job.pk)))
    assert "Pending" in job_page
    assert "Cancel job" not in job_page
    assert client.get(url("dataset", pk=item.dataset_id)).status_code == 200
    assert client.get(url("item", pk=item.pk)).status_code == 200
    members = text(client.get(url("members")))
    assert "alice@example.com" in members
    assert "New API key" not in members
    assert "Invite someone" not in members


def test_victor_gets_403_on_writes(client, victor, bob, item, job, podcast, inbox):
    login(client, victor)
    upload = SimpleUploadedFile("a.wav", b"RIFF....WAVE", content_type="audio/wav")
    response = client.post(url("upload"), {"dataset": inbox.pk, "title": "Sneaky", "file": upload})
    assert response.status_code == 403
    assert client.post(url("job-cancel", pk=job.pk)).status_code == 403
    assert client.post(url("item-run", pk=item.pk), {"preset": podcast.pk}).status_code == 403
    invite = client.post(url("invite"), {"email": "eve@example.com", "role": "member"})
    assert invite.status_code == 403
    key = client.post(url("key-create"), {"name": "mine", "role": "viewer"})
    assert key.status_code == 403
    bob_key = ApiKey.objects.get(user=bob.user)
    assert client.post(url("key-revoke", pk=bob_key.pk)).status_code == 403
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING
    assert not MediaItem.objects.filter(title="Sneaky").exists()
    assert Job.objects.count() == 1
    assert not Invitation.objects.exists()
    assert not ApiKey.objects.filter(name="mine").exists()
    assert ApiKey.objects.get(pk=bob_key.pk).revoked_at is None


def test_bob_a_member_cannot_manage_members_or_keys(client, bob, alice):
    login(client, bob)
    assert client.post(url("key-create"), {"name": "b", "role": "member"}).status_code == 403
    alice_membership = Membership.objects.get(user=alice.user)
    assert client.post(url("member-remove", pk=alice_membership.pk)).status_code == 403


# --- upload ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_bob_uploads_a_wav_and_the_podcast_job_succeeds(client, bob, tmp_path, run_tasks_inline):
    from media_jobs.samples import speech_like

    podcast = seeded_preset("podcast")
    inbox = Dataset.objects.get(workspace__slug="acme", name="inbox")
    # The preset chosen in the form replaces the dataset's default rather than running beside it.
    inbox.default_preset = seeded_preset("broadcast")
    inbox.save()
    wav = speech_like(tmp_path / "interview.wav", seconds=6)
    login(client, bob)

    form = text(client.get(url("upload")))
    assert 'enctype="multipart/form-data"' in form
    assert f'<option value="{podcast.pk}">Podcast</option>' in form
    with wav.open("rb") as fh:
        response = client.post(
            url("upload"),
            {
                "dataset": inbox.pk,
                "title": "Interview with Ada",
                "description": "Raw take",
                "preset": podcast.pk,
                "file": fh,
            },
        )
    assert response.status_code == 302, text(response)
    job = Job.objects.get(item__title="Interview with Ada")
    assert response["Location"] == url("job", pk=job.pk)
    assert job.status == Job.Status.SUCCESS, job.error
    assert job.created_by == bob.user
    assert job.item.description == "Raw take"
    assert list(Job.objects.values_list("preset__slug", flat=True)) == ["podcast"]

    page = client.get(response["Location"])
    body = text(page)
    assert "Success" in body
    assert "hx-trigger" not in body  # finished: no more polling
    assert "Cancel job" not in body
    output = JobOutput.objects.get(job=job, kind="media")
    measured = output.statistics["integrated"]
    assert -17.5 < measured < -14.5
    assert f"{measured:.1f}" in body
    assert f"{job.statistics['input']['integrated']:.1f}" in body
    assert output.checksum and output.checksum in body
    assert output.filename in body

    links = re.findall(r'href="([^"]+/outputs/\d+/download)"', body)
    assert len(links) == 1
    download = client.get(links[0])
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert len(data) == output.size
    assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)

    # the waveform image the engine drew is on the page, and is a PNG
    (image,) = re.findall(r'<img class="waveform" src="([^"]+)"', body)
    drawn = client.get(image)
    assert b"".join(drawn.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Max momentary loudness" in body and "Signal-to-noise ratio" in body

    item_page = text(client.get(url("item", pk=job.item_id)))
    assert "Interview with Ada" in item_page
    assert re.search(r'href="[^"]+/items/\d+/download', item_page)


def test_an_upload_without_a_preset_runs_the_datasets_default(
    client, bob, inbox, podcast, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from media_jobs.samples import speech_like

    enqueued: list[int] = []
    monkeypatch.setattr("media_jobs.tasks.enqueue_run_job", enqueued.append)
    inbox.default_preset = podcast
    inbox.save()
    wav = speech_like(tmp_path / "short.wav", seconds=1)
    login(client, bob)
    with wav.open("rb") as fh, django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("upload"), {"dataset": inbox.pk, "title": "", "file": fh})
    item = MediaItem.objects.get()
    assert response.status_code == 302
    assert response["Location"] == url("item", pk=item.pk)
    assert item.title == "short"
    assert item.channels == 2
    job = Job.objects.get(item=item)
    assert job.preset == podcast
    assert enqueued == [job.pk]


def test_an_upload_with_a_refused_extension_keeps_what_was_typed(client, bob, inbox):
    login(client, bob)
    response = client.post(
        url("upload"),
        {
            "dataset": inbox.pk,
            "title": "My carefully typed title",
            "description": "A description worth keeping",
            "file": SimpleUploadedFile("notes.txt", b"not audio at all"),
        },
    )
    assert response.status_code == 415
    body = text(response)
    assert "Format .txt is not accepted by this dataset" in body
    assert 'value="My carefully typed title"' in body
    assert "A description worth keeping</textarea>" in body
    assert not MediaItem.objects.exists()


def test_an_upload_over_the_size_limit_is_413_and_keeps_the_title(client, bob, inbox, monkeypatch):
    inbox.max_file_size = 1000
    inbox.save()

    def never(**kwargs):
        raise AssertionError("the stream guard should have dropped the file before intake")

    monkeypatch.setattr("media_jobs.services.item_create_from_upload", never)
    login(client, bob)
    response = client.post(
        url("upload"),
        {
            "dataset": inbox.pk,
            "title": "Too long an episode",
            "file": SimpleUploadedFile("big.wav", b"\0" * 5000),
        },
    )
    assert response.status_code == 413
    body = text(response)
    assert "exceeds this dataset&#x27;s limit of 1000 bytes" in body
    assert 'value="Too long an episode"' in body
    assert not MediaItem.objects.exists()


def test_an_upload_needs_a_file_or_a_url(client, bob, inbox):
    login(client, bob)
    response = client.post(url("upload"), {"dataset": inbox.pk, "title": "Nothing attached"})
    assert response.status_code == 400
    assert "Choose a file to upload or give a URL" in text(response)
    assert 'value="Nothing attached"' in text(response)


def test_a_refused_url_shows_its_message_and_keeps_the_url(client, bob, inbox):
    login(client, bob)
    response = client.post(
        url("upload"),
        {"dataset": inbox.pk, "title": "From afar", "url": "https://127.0.0.1/secret.mp3"},
    )
    assert response.status_code == 422
    body = text(response)
    assert "Could not fetch the URL" in body
    assert 'value="https://127.0.0.1/secret.mp3"' in body
    assert 'value="From afar"' in body
    assert 'class="form-error"' in body
    assert not MediaItem.objects.filter(title="From afar").exists()


def test_the_upload_checks_csrf_after_installing_the_size_guard(bob, inbox):
    client = Client(enforce_csrf_checks=True)
    login(client, bob)
    fields = {"dataset": inbox.pk, "title": "t", "file": SimpleUploadedFile("n.txt", b"x")}
    assert client.post(url("upload"), fields).status_code == 403
    client.get(url("upload"))  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    fields["file"] = SimpleUploadedFile("n.txt", b"x")
    response = client.post(url("upload"), {**fields, "csrfmiddlewaretoken": token})
    assert response.status_code == 415


# --- live partials ---------------------------------------------------------------------------


def test_the_jobs_partial_polls_only_while_a_job_is_active(client, alice, job):
    login(client, alice)
    partial = client.get(url("workspace"), **HX)
    body = text(partial)
    assert partial.status_code == 200
    assert "<html" not in body
    assert 'id="jobs-table"' in body
    assert f'href="{url("job", pk=job.pk)}"' in body
    assert 'hx-trigger="every 2s"' in body
    assert f'hx-get="{url("workspace")}"' in body
    assert "HX-Request" in partial["Vary"]
    # The full page carries the same live table.
    assert 'hx-trigger="every 2s"' in text(client.get(url("workspace")))

    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCESS, progress=100, stage="done")
    body = text(client.get(url("workspace"), **HX))
    assert 'id="jobs-table"' in body
    assert "Success" in body
    assert "hx-trigger" not in body
    assert "hx-trigger" not in text(client.get(url("workspace")))


def test_the_job_status_partial_polls_only_while_active(client, bob, job):
    login(client, bob)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, progress=42, stage="encoding")
    body = text(client.get(url("job", pk=job.pk), **HX))
    assert "<html" not in body
    assert 'id="job-live"' in body
    assert '<progress max="100" value="42"' in body
    assert "encoding" in body
    assert 'hx-trigger="every 2s"' in body
    assert "Cancel job" in body

    response = client.post(url("job-cancel", pk=job.pk))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    body = text(client.get(url("job", pk=job.pk), **HX))
    assert "Cancelled" in body
    assert "hx-trigger" not in body
    assert "Cancel job" not in body


# --- members and API keys --------------------------------------------------------------------


def test_api_key_is_shown_once_then_only_its_prefix(client, alice):
    login(client, alice)
    response = client.post(url("key-create"), {"name": "CI uploader", "role": "member"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    match = re.search(r'value="(mh_[0-9a-f]{8}\.[\w-]+)"', text(response))
    assert match, "the raw key is on the creation page"
    raw = match.group(1)
    key = ApiKey.objects.get(name="CI uploader")
    assert raw.startswith(key.prefix + ".")
    assert ApiKey.find(raw) == key

    later = text(client.get(url("members")))
    assert key.prefix in later
    assert "CI uploader" in later
    assert raw not in later
    assert raw.split(".", 1)[1] not in later

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/me").status_code == 200

    revoke = client.post(url("key-revoke", pk=key.pk))
    assert revoke.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api.get("/api/v1/me").status_code == 401
    assert "revoked" in text(client.get(url("members")))


def test_an_admin_cannot_mint_a_key_above_their_role(client, acme, alice):
    from tests.conftest import _person

    admin = _person("ada@example.com", acme, "admin")
    login(client, admin)
    response = client.post(url("key-create"), {"name": "too strong", "role": "owner"})
    assert response.status_code == 400
    assert not ApiKey.objects.filter(name="too strong").exists()


def test_an_invitation_shows_its_link_and_can_be_accepted(client, alice, django_user_model):
    login(client, alice)
    response = client.post(url("invite"), {"email": "Dan@Example.com", "role": "viewer"})
    assert response.status_code == 200
    match = re.search(r'value="(http[^"]+/invite/[^"]+/)"', text(response))
    assert match
    invitation = Invitation.objects.get()
    assert invitation.email == "dan@example.com"
    assert invitation.role == "viewer"

    dan = django_user_model.objects.create_user(email="dan@example.com", password="pw-dan-12345")
    other = Client()
    other.force_login(dan)
    accepted = other.get(match.group(1))
    assert accepted.status_code == 302
    assert accepted["Location"] == url("workspace")
    assert Membership.objects.get(user=dan, workspace__slug="acme").role == "viewer"


def test_an_invitation_cannot_hand_out_ownership(client, alice):
    login(client, alice)
    response = client.post(url("invite"), {"email": "eve@example.com", "role": "owner"})
    assert response.status_code == 400
    assert not Invitation.objects.exists()


def test_removing_a_member_revokes_their_keys_but_never_the_last_owner(client, alice, bob):
    login(client, alice)
    bob_membership = Membership.objects.get(user=bob.user)
    alice_membership = Membership.objects.get(user=alice.user)
    page = text(client.get(url("members")))
    assert f'action="{url("member-remove", pk=bob_membership.pk)}"' in page
    # Alice is the only owner: no button, and a forged POST is refused.
    assert f'action="{url("member-remove", pk=alice_membership.pk)}"' not in page
    response = client.post(url("member-remove", pk=alice_membership.pk), follow=True)
    assert "last one" in text(response)
    assert Membership.objects.filter(pk=alice_membership.pk).exists()

    assert bob.api.get("/api/v1/me").status_code == 200
    client.post(url("member-remove", pk=bob_membership.pk))
    assert not Membership.objects.filter(pk=bob_membership.pk).exists()
    assert ApiKey.objects.get(user=bob.user).revoked_at is not None
    assert bob.api.get("/api/v1/me").status_code == 401
