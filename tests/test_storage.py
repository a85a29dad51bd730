"""The same storage behaviour on local disk and on a real S3 endpoint (moto server, loopback)."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
import requests

from media_jobs import samples
from media_jobs.models import Job, MediaItem
from tests.conftest import free_port
from tests.media import ebur128

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(scope="session")
def s3_endpoint():
    """Start moto's standalone S3 server on loopback for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def backend(request, settings, media_root, monkeypatch):
    """Point default storage at local disk or at a fresh S3 bucket; return a lister of its keys."""
    if request.param == "local":
        return lambda: sorted(
            str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file()
        )
    endpoint = request.getfixturevalue("s3_endpoint")
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(k, v)
    bucket = f"media-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "file_overwrite": True,
                "querystring_auth": True,
                "max_memory_size": 8 * 1024 * 1024,
                "addressing_style": "path",
                "signature_version": "s3v4",
            },
        },
    }

    def keys():
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)

    keys.client, keys.bucket = client, bucket
    return keys


@pytest.fixture(scope="session")
def talk_wav(tmp_path_factory) -> Path:
    return samples.speech_like(tmp_path_factory.mktemp("s3") / "talk.wav", seconds=6, gain_db=-22)


def fetch(person, url: str) -> bytes:
    """Download like a client would: follow our view, or the presigned URL it hands out."""
    if url.startswith("http://testserver"):
        r = person.api.get(url)
        if r.status_code == 302:
            url = r["Location"]
        else:
            assert r.status_code == 200
            return b"".join(r.streaming_content)
    got = requests.get(url, timeout=30)
    assert got.status_code == 200
    return got.content


def test_intake_stores_the_input_at_its_documented_key(bob, acme, backend, talk_wav):
    inbox = acme.datasets.get(name="inbox")
    with talk_wav.open("rb") as fh:
        r = bob.api.post(f"/api/v1/datasets/{inbox.pk}/items", {"audio": fh})
    assert r.status_code == 201, r.content
    item_id = r.json()["id"]
    assert backend() == [f"workspaces/{acme.pk}/items/{item_id}/input/talk.wav"]
    assert fetch(bob, r.json()["download_url"]) == talk_wav.read_bytes()


def test_a_job_reads_its_input_from_and_writes_outputs_to_storage(
    bob, charlie, acme, backend, talk_wav, run_tasks_inline, tmp_path
):
    with talk_wav.open("rb") as fh:
        r = bob.api.post("/api/v1/simple/jobs", {"input_file": fh, "preset": "podcast"})
    job = bob.api.get(f"/api/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "success", job["error"]
    (out,) = job["outputs"]
    item = MediaItem.objects.get(pk=job["item"])
    (waveform,) = job["reports"]
    assert waveform["format"] == "png"
    assert backend() == sorted(
        [
            item.input_file.name,
            f"workspaces/{acme.pk}/jobs/{job['id']}/{out['filename']}",
            f"workspaces/{acme.pk}/jobs/{job['id']}/{waveform['filename']}",
        ]
    )
    assert fetch(bob, waveform["download_url"]).startswith(b"\x89PNG")
    data = fetch(bob, out["download_url"])
    assert len(data) == out["size"]
    mp3 = tmp_path / "out.mp3"
    mp3.write_bytes(data)
    assert ebur128(mp3)["integrated"] == pytest.approx(-16.0, abs=0.5)
    # Our own download endpoint: charlie is refused before any link is handed out.
    assert charlie.api.get(f"/api/v1/outputs/{out['id']}/download").status_code == 404


def test_a_corrupt_upload_leaves_nothing_in_storage(bob, acme, backend, tmp_path):
    bad = tmp_path / "noise.mp3"
    bad.write_bytes(b"\x00\x01garbage" * 3000)
    with bad.open("rb") as fh:
        r = bob.api.post(
            f"/api/v1/datasets/{acme.datasets.get(name='inbox').pk}/items", {"audio": fh}
        )
    assert r.status_code == 422
    assert backend() == []


def test_s3_downloads_are_presigned_links(bob, acme, backend, talk_wav, run_tasks_inline):
    if not hasattr(backend, "bucket"):
        pytest.skip("presigned links are an S3 feature; local disk streams through our view")
    with talk_wav.open("rb") as fh:
        r = bob.api.post("/api/v1/simple/jobs", {"input_file": fh, "preset": "broadcast"})
    job = Job.objects.get(pk=r.json()["id"])
    url = bob.api.get(f"/api/v1/jobs/{job.pk}").json()["outputs"][0]["download_url"]
    assert "X-Amz-Signature=" in url and backend.bucket in url
    assert requests.get(url.split("?")[0], timeout=30).status_code == 403  # unsigned is refused
    r = bob.api.get(f"/api/v1/outputs/{job.outputs.get(kind='media').pk}/download")
    assert r.status_code == 302 and "X-Amz-Signature=" in r["Location"]
