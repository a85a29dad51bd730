"""Intake into datasets, on the Audioscrape contract: multipart or URL, 400/404/413/415/422."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media_jobs import samples
from media_jobs.models import Job, MediaItem, Preset

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def wav_file(tmp_path_factory) -> Path:
    return samples.speech_like(tmp_path_factory.mktemp("media") / "talk.wav", seconds=4)


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def upload(person, dataset, path: Path, name: str | None = None, **fields):
    with path.open("rb") as fh:
        data = {"audio": fh, **fields}
        if name:
            from django.core.files.uploadedfile import SimpleUploadedFile

            data["audio"] = SimpleUploadedFile(name, path.read_bytes())
        return person.api.post(f"/api/v1/datasets/{dataset.pk}/items", data, format="multipart")


def test_it_stores_an_upload_with_its_probe_facts(bob, acme, wav_file, media_root):
    inbox = acme.datasets.get(name="inbox")
    r = upload(bob, inbox, wav_file, title="Interview", description="Q3")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["success"] is True and body["item_id"] == body["id"]
    item = MediaItem.objects.get(pk=body["item_id"])
    assert (item.title, item.description, item.status) == ("Interview", "Q3", "queued")
    assert (item.channels, item.sample_rate) == (2, 44100)
    assert item.duration == pytest.approx(4.0, abs=0.1)
    assert item.input_file.name == f"workspaces/{acme.pk}/items/{item.pk}/input/talk.wav"
    assert (media_root / item.input_file.name).read_bytes() == wav_file.read_bytes()
    assert item.size == wav_file.stat().st_size


def test_title_defaults_to_the_file_name(bob, acme, wav_file):
    r = upload(bob, acme.datasets.get(name="inbox"), wav_file)
    assert r.json()["title"] == "talk"


def test_the_stored_input_downloads_for_members_only(bob, charlie, acme, wav_file):
    r = upload(bob, acme.datasets.get(name="inbox"), wav_file)
    url = f"/api/v1/items/{r.json()['id']}/download"
    got = bob.api.get(url)
    assert got.status_code == 200
    assert b"".join(got.streaming_content) == wav_file.read_bytes()
    assert charlie.api.get(url).status_code == 404


def test_it_refuses_an_extension_outside_the_dataset_list(bob, acme, wav_file, media_root):
    inbox = acme.datasets.get(name="inbox")
    inbox.allowed_formats = ["mp3"]
    inbox.save()
    r = upload(bob, inbox, wav_file)
    assert r.status_code == 415
    assert ".wav" in r.json()["error"] and "mp3" in r.json()["error"]
    assert stored_files(media_root) == [] and not MediaItem.objects.exists()


def test_it_refuses_content_that_does_not_match_the_extension(bob, acme, wav_file, media_root):
    r = upload(bob, acme.datasets.get(name="inbox"), wav_file, name="talk.mp3")
    assert r.status_code == 415
    assert "wav" in r.json()["error"]
    assert stored_files(media_root) == []


def test_it_refuses_an_oversize_upload_with_413(bob, acme, wav_file, media_root):
    inbox = acme.datasets.get(name="inbox")
    inbox.max_file_size = 50_000
    inbox.save()
    r = upload(bob, inbox, wav_file)
    assert r.status_code == 413
    assert "50000" in r.json()["error"]
    assert stored_files(media_root) == [] and not MediaItem.objects.exists()


def test_the_size_guard_stops_the_stream_itself(acme):
    """The upload handler aborts while streaming, even when Content-Length is absent or lies."""
    from media_jobs.uploads import SizeLimitUploadHandler, UploadTooLarge

    handler = SizeLimitUploadHandler(max_bytes=100)
    assert handler.receive_data_chunk(b"x" * 60, 0) == b"x" * 60
    with pytest.raises(UploadTooLarge):
        handler.receive_data_chunk(b"x" * 60, 60)


def test_it_requires_metadata_where_the_dataset_asks(bob, acme, wav_file, media_root):
    inbox = acme.datasets.get(name="inbox")
    inbox.require_metadata = True
    inbox.save()
    r = upload(bob, inbox, wav_file, title="Only a title")
    assert r.status_code == 400
    assert "description" in r.json()["error"]
    assert stored_files(media_root) == []
    assert upload(bob, inbox, wav_file, title="T", description="D").status_code == 201


def test_a_corrupt_file_becomes_a_failed_item_and_leaves_nothing_stored(
    bob, acme, tmp_path, media_root
):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 40)
    r = upload(bob, acme.datasets.get(name="inbox"), bad)
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False and "decode" in body["error"].lower()
    item = MediaItem.objects.get(pk=body["item_id"])
    assert item.status == "failed" and item.error and not item.input_file
    assert stored_files(media_root) == []


def test_it_needs_a_file_or_a_url(bob, acme):
    r = bob.api.post(
        f"/api/v1/datasets/{acme.datasets.get(name='inbox').pk}/items", {}, format="json"
    )
    assert r.status_code == 400
    assert "audio" in r.json()["error"]


@pytest.mark.parametrize(
    "url",
    ["http://example.com/a.mp3", "ftp://example.com/a.mp3", "not a url", "https://"],
)
def test_url_intake_refuses_non_https_with_400(bob, acme, url):
    inbox = acme.datasets.get(name="inbox")
    r = bob.api.post(f"/api/v1/datasets/{inbox.pk}/items", {"audio_url": url}, format="json")
    assert r.status_code == 400, r.content
    assert not MediaItem.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.mp3",
        "https://[::1]/a.mp3",
        "https://169.254.169.254/latest/a.mp3",
        "https://10.1.2.3/a.mp3",
        "https://0x7f000001/a.mp3",
    ],
)
def test_url_intake_refuses_private_addresses_with_422(bob, acme, url):
    inbox = acme.datasets.get(name="inbox")
    r = bob.api.post(f"/api/v1/datasets/{inbox.pk}/items", {"audio_url": url}, format="json")
    assert r.status_code == 422, r.content
    assert "not public" in r.json()["error"] or "forbidden" in r.json()["error"].lower()


def test_url_intake_checks_the_extension_before_fetching(bob, acme):
    inbox = acme.datasets.get(name="inbox")
    r = bob.api.post(
        f"/api/v1/datasets/{inbox.pk}/items",
        {"audio_url": "https://127.0.0.1/payload.exe"},
        format="json",
    )
    assert r.status_code == 415


def test_a_dataset_default_preset_processes_every_new_item(bob, acme, wav_file):
    inbox = acme.datasets.get(name="inbox")
    inbox.default_preset = Preset.objects.get(workspace=None, slug="podcast")
    inbox.save()
    r = upload(bob, inbox, wav_file)
    job = Job.objects.get(item_id=r.json()["id"])
    assert job.preset.slug == "podcast" and job.status == "pending"
    assert job.params["algorithms"]["loudnesstarget"] == -16


def test_items_list_filters_by_dataset(bob, acme, wav_file):
    inbox = acme.datasets.get(name="inbox")
    upload(bob, inbox, wav_file)
    other = bob.api.post("/api/v1/datasets", {"name": "other"}, format="json").json()
    assert len(bob.api.get(f"/api/v1/items?dataset={inbox.pk}").json()["results"]) == 1
    assert bob.api.get(f"/api/v1/items?dataset={other['id']}").json()["results"] == []
    assert (
        json.loads(json.dumps(bob.api.get(f"/api/v1/datasets/{inbox.pk}/items").json()))["count"]
        == 1
    )


@pytest.fixture
def https_files(tmp_path, settings, wav_file):
    """Serve a WAV and a broken file over HTTPS on 127.0.0.2, the one address tests may fetch."""
    from tests.tls import https_directory, make_tls_files

    tls = make_tls_files(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "talk.wav").write_bytes(wav_file.read_bytes())
    (site / "broken.wav").write_bytes(b"RIFF" + bytes(5000))
    settings.INTAKE_URL_ALLOW_NETWORKS = ["127.0.0.2/32"]
    settings.INTAKE_URL_CA_BUNDLE = str(tls.ca)
    with https_directory(site, tls) as base:
        yield base


def test_url_intake_fetches_and_stores_a_public_file(bob, acme, https_files, wav_file, media_root):
    inbox = acme.datasets.get(name="inbox")
    r = bob.api.post(
        f"/api/v1/datasets/{inbox.pk}/items",
        {"audio_url": f"{https_files}/talk.wav", "description": "fetched"},
        format="json",
    )
    assert r.status_code == 201, r.content
    item = MediaItem.objects.get(pk=r.json()["item_id"])
    assert (item.source, item.source_url) == ("url", f"{https_files}/talk.wav")
    assert item.title == "talk" and item.channels == 2
    assert (media_root / item.input_file.name).read_bytes() == wav_file.read_bytes()


def test_url_intake_caps_the_size_with_413(bob, acme, https_files, media_root):
    inbox = acme.datasets.get(name="inbox")
    inbox.max_file_size = 10_000
    inbox.save()
    r = bob.api.post(
        f"/api/v1/datasets/{inbox.pk}/items",
        {"audio_url": f"{https_files}/talk.wav"},
        format="json",
    )
    assert r.status_code == 413
    assert "10000" in r.json()["error"]
    assert stored_files(media_root) == []


def test_url_intake_reports_a_missing_file_with_422(bob, acme, https_files):
    inbox = acme.datasets.get(name="inbox")
    r = bob.api.post(
        f"/api/v1/datasets/{inbox.pk}/items",
        {"audio_url": f"{https_files}/gone.wav"},
        format="json",
    )
    assert r.status_code == 422
    assert "404" in r.json()["error"]


def test_url_intake_of_an_undecodable_file_keeps_nothing(bob, acme, https_files, media_root):
    inbox = acme.datasets.get(name="inbox")
    r = bob.api.post(
        f"/api/v1/datasets/{inbox.pk}/items",
        {"audio_url": f"{https_files}/broken.wav"},
        format="json",
    )
    assert r.status_code == 422
    assert MediaItem.objects.get(pk=r.json()["item_id"]).status == "failed"
    assert stored_files(media_root) == []


def test_simple_job_takes_an_input_url(bob, https_files):
    r = bob.api.post(
        "/api/v1/simple/jobs", {"input_url": f"{https_files}/talk.wav", "preset": "podcast"}
    )
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "pending"
    assert MediaItem.objects.get(pk=r.json()["item"]).source == "url"
