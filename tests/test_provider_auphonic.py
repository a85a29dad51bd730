"""Auphonic: the adapter against its emulator over real HTTP on loopback (providers.md)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from media_jobs import connections, engine, samples, services, tasks
from media_jobs.engine.tags import read_chapters, read_tags
from media_jobs.models import Job, JobOutput, MediaItem, Preset, ProviderAccount
from media_jobs.providers import get_provider
from media_jobs.providers.base import ProviderError
from media_jobs.providers.context import JobContext
from media_jobs.sandbox.base import emulator
from tests.conftest import free_port
from tests.media import ebur128
from tests.remote import drive

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

KIND = "auphonic"
API_KEY = "aph-test-key-5f1e0c9a7b"
PODCAST = {
    "algorithms": {
        "filtering": True,
        "leveler": True,
        "normloudness": True,
        "loudnesstarget": -16,
        "maxpeak": -1,
    },
    "output_files": [{"format": "mp3", "bitrate": 128}],
}


@pytest.fixture
def wav(tmp_path) -> Path:
    return samples.speech_like(tmp_path / "episode.wav", seconds=4, gain_db=-24)


def make_preset(workspace, params: dict, slug: str = "auphonic-podcast") -> Preset:
    preset = Preset(workspace=workspace, slug=slug, name=slug, provider=KIND, params=params)
    preset.clean()  # validated as when an admin saves it
    preset.save()
    return preset


def make_account(workspace, key: str = API_KEY) -> ProviderAccount:
    return connections.account_create(
        workspace=workspace, provider=KIND, credentials={"api_key": key}
    )


def make_job(acme, alice, wav: Path, preset: Preset, *, account=None, start: bool = True) -> Job:
    """Create an item and a job; with start, the submit runs when the transaction commits."""
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"),
        path=wav,
        filename="episode.wav",
        title="Episode 1",
        user=alice.user,
    )
    with transaction.atomic():
        job = services.job_create(
            item=item, preset=preset, user=alice.user, account=account, start=start
        )
    return job


def calls(sandbox, method: str | None = None, path: str = "") -> list[dict]:
    return sandbox.requests(KIND, method, path)


def productions() -> dict:
    emu = emulator(KIND)
    with emu.lock:
        return dict(emu.jobs)


def api_path(suffix: str) -> str:
    return urlsplit(settings.PROVIDER_BASE_URLS[KIND]).path + suffix


def wait_for(predicate, timeout: float = 60):
    """Return predicate()'s first true value (the emulator works in a background thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


# --- presets -------------------------------------------------------------------------------


def test_it_validates_auphonic_parameters():
    provider = get_provider(KIND)
    clean = provider.validate_params(
        {"algorithms": {"hipfilter": True, "normloudness": True, "loudnesstarget": "-23"}}
    )
    # The drifted name is accepted and sent under the current one; no preset: one MP3.
    assert clean == {
        "algorithms": {"filtering": True, "normloudness": True, "loudnesstarget": -23},
        "output_files": [{"format": "mp3", "bitrate": 128}],
    }
    with pytest.raises(ValueError) as exc:
        provider.validate_params(
            {
                "algorithms": {"levelr": True, "loudnesstarget": -40, "denoise": "yes"},
                "output_files": [{"format": "mp4", "bitrate": 5000, "filename": "../x.mp3"}],
                "metadata": {"colour": "red"},
                "chapters": [{"start": "1:30", "title": "Late"}],
                "preset": "not-a-uuid",
            }
        )
    text = str(exc.value)
    for expected in (
        "algorithms.levelr: unknown Auphonic algorithm",
        "algorithms.loudnesstarget: -40 is outside -31..-13",
        "algorithms.denoise: expected true or false",
        "output_files[0].format: 'mp4' is not one of",
        "output_files[0].bitrate",
        "output_files[0].filename",
        "metadata.colour: unknown tag",
        "chapters[0].start",
        "preset: must be an Auphonic UUID",
    ):
        assert expected in text
    with pytest.raises(ValidationError):
        Preset(slug="x", name="x", provider=KIND, params={"algorithms": {"nope": 1}}).clean()
    # With a preset, Auphonic's preset decides the outputs.
    assert provider.validate_params({"preset": "sandboxPodcastPreset16"}) == {
        "preset": "sandboxPodcastPreset16"
    }


# --- a whole job ---------------------------------------------------------------------------


def test_it_runs_a_production_from_submit_to_stored_results(sandbox, acme, alice, wav):
    preset = make_preset(
        acme,
        {
            **PODCAST,
            "output_files": [
                {"format": "mp3", "bitrate": 128},
                {"format": "flac", "suffix": "-master"},
            ],
            "metadata": {"artist": "Acme Radio", "tags": ["news"]},
            "chapters": [{"start": "00:00:00", "title": "Intro"}],
            "speech_recognition": {"language": "en"},
        },
    )
    make_account(acme)
    job = drive(make_job(acme, alice, wav, preset))
    assert job.status == Job.Status.SUCCESS, job.error

    # What Auphonic received, exactly.
    (create,) = calls(sandbox, "POST", "productions.json")
    assert create["path"] == api_path("productions.json")
    assert create["headers"]["Authorization"] == f"bearer {API_KEY}"
    assert create["content_type"] == "application/json"
    assert create["json"] == {
        "metadata": {"artist": "Acme Radio", "tags": ["news"], "title": "Episode 1"},
        "algorithms": PODCAST["algorithms"],
        "chapters": [{"start": "00:00:00", "title": "Intro"}],
        "speech_recognition": {"language": "en"},
        "output_files": [
            {"format": "mp3", "bitrate": 128},
            {"format": "flac", "suffix": "-master"},
            {"format": "speech", "ending": "json"},
        ],
        "webhook": f"{settings.SITE_URL}/hooks/auphonic/{job.pk}/{job.webhook_token}",
    }
    uuid = job.remote_id
    assert list(productions()) == [uuid]
    (upload,) = calls(sandbox, "POST", "upload.json")
    assert upload["path"] == api_path(f"production/{uuid}/upload.json")
    assert upload["content_type"] == "multipart/form-data"
    assert upload["files"] == {"input_file": "episode.wav"}
    assert upload["headers"]["Authorization"] == f"bearer {API_KEY}"
    (start,) = calls(sandbox, "POST", "start.json")
    assert start["path"] == api_path(f"production/{uuid}/start.json")
    assert calls(sandbox, "GET", f"production/{uuid}/status.json")
    downloads = calls(sandbox, "GET", "download/audio-result/")
    assert sorted(d["path"].rsplit("/", 1)[1] for d in downloads) == [
        "episode-master.flac",
        "episode.json",
        "episode.mp3",
    ]
    assert all(d["headers"]["Authorization"] == f"bearer {API_KEY}" for d in downloads)
    # Auphonic answers a download with a redirect, which the client followed.
    assert len(calls(sandbox, "GET", "/files/")) == 3

    # The results are in our storage and are real audio at the target loudness.
    outputs = {o.format: o for o in JobOutput.objects.filter(job=job)}
    assert set(outputs) == {"mp3", "flac", "speech"}
    mp3 = outputs["mp3"]
    assert mp3.kind == "media" and mp3.filename == "episode.mp3"
    stored = Path(mp3.file.path)
    assert stored.stat().st_size == mp3.size
    facts = engine.probe(stored)
    assert facts.format_name == "mp3" and facts.duration == pytest.approx(4, abs=0.2)
    assert ebur128(stored)["integrated"] == pytest.approx(-16, abs=1)
    assert mp3.statistics["integrated"] == pytest.approx(-16, abs=1)
    assert engine.probe(Path(outputs["flac"].file.path)).format_name == "flac"
    # Auphonic tagged the files with the metadata (the item's title) and the chapter marks.
    assert read_tags(stored, "mp3") == {
        "title": "Episode 1",
        "artist": "Acme Radio",
        "tags": ["news"],
    }
    assert [(c.start, c.title) for c in read_chapters(stored, "mp3")] == [(0.0, "Intro")]
    assert outputs["speech"].kind == "report"

    # Auphonic's [value, unit] statistics, in our shape.
    stats = job.statistics
    assert stats["output"]["integrated"] == pytest.approx(-16, abs=1)
    assert stats["output"]["true_peak"] <= -1 + 0.3
    levels = productions()[uuid]["statistics"]["levels"]
    assert stats["input"]["integrated"] == levels["input"]["loudness"][0]
    assert stats["input"]["lra"] == levels["input"]["lra"][0]
    assert stats["input"]["true_peak"] == levels["input"]["peak"][0]
    assert stats["output"]["integrated"] == levels["output"]["loudness"][0]
    assert stats["gain"] == levels["output"]["gain_mean"][0] and stats["gain"] > 0
    assert stats["input"]["duration"] == pytest.approx(4, abs=0.2)
    assert stats["target"] == -16 and stats["max_peak"] == -1
    assert stats["length"] == pytest.approx(4, abs=0.2)
    assert stats["used_credits"]["combined"] > 0
    item = MediaItem.objects.get(pk=job.item_id)
    assert item.status == MediaItem.Status.PUBLISHED
    assert item.transcript["language"] == "en" and item.transcript["segments"]


@pytest.fixture
def s3_storage(settings, monkeypatch):
    """Keep media on a real S3 endpoint (moto's server on loopback); return the endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="media")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "media",
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "querystring_auth": True,
                "max_memory_size": 8 * 1024 * 1024,
                "addressing_style": "path",
                "signature_version": "s3v4",
            },
        },
    }
    yield endpoint
    server.stop()


def test_it_lets_auphonic_fetch_an_input_stored_on_s3(sandbox, s3_storage, acme, alice, wav):
    make_account(acme)
    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.SUCCESS, job.error
    (create,) = calls(sandbox, "POST", "productions.json")
    # A presigned URL of the stored input: Auphonic fetches it, nothing is uploaded.
    assert create["json"]["input_file"].startswith(f"{s3_storage}/media/workspaces/")
    assert "X-Amz-Signature=" in create["json"]["input_file"]
    assert not calls(sandbox, "POST", "upload.json")
    assert len(calls(sandbox, "POST", "start.json")) == 1
    output = job.outputs.get()
    with output.file.open("rb") as fh:
        data = fh.read()
    assert len(data) == output.size and data[:3] in (b"ID3", b"\xff\xfb")


def test_the_emulator_fetches_inputs_only_from_the_portals_storage(sandbox, wav):
    base = settings.PROVIDER_BASE_URLS[KIND]
    auth = {"Authorization": f"bearer {API_KEY}"}
    created = requests.post(
        f"{base}productions.json",
        json={"input_file": "http://169.254.169.254/latest/meta-data/", "action": "start"},
        headers=auth,
        timeout=10,
    )
    assert created.status_code == 200, created.text
    uuid = created.json()["data"]["uuid"]
    production = wait_for(lambda: productions()[uuid]["status"] == 2 and productions()[uuid])
    assert production["error_message"] == (
        "The sandbox fetches input files only from the portal's own storage."
    )


# --- exactly one remote production ----------------------------------------------------------


def test_it_creates_one_production_when_the_task_runs_twice(sandbox, acme, alice, wav):
    sandbox.control(KIND, drop_webhooks=True)
    make_account(acme)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST), start=False)
    Job.objects.filter(pk=job.pk).update(stage="queued")
    tasks.run_job(job.pk)
    tasks.run_job(job.pk)  # a duplicate delivery
    assert len(calls(sandbox, "POST", "productions.json")) == 1
    job = drive(job)
    assert job.status == Job.Status.SUCCESS, job.error
    assert len(productions()) == 1
    assert len(calls(sandbox, "POST", "start.json")) == 1


def test_it_resumes_the_same_production_after_a_failure_past_create(
    sandbox, acme, alice, wav, monkeypatch
):
    make_account(acme)
    original = JobContext.save_remote_id

    def save_then_break(self, remote_id):
        original(self, remote_id)
        # The step after create (the upload) fails once, as a crash would.
        sandbox.control(KIND, fail_next=1, fail_status=503)

    monkeypatch.setattr(JobContext, "save_remote_id", save_then_break)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.remote_id
    assert job.transient_errors == 1 and "503" in job.error
    first = job.remote_id
    monkeypatch.setattr(JobContext, "save_remote_id", original)

    job = drive(job)
    assert job.status == Job.Status.SUCCESS, job.error
    assert job.remote_id == first
    assert list(productions()) == [first]
    assert len(calls(sandbox, "POST", "productions.json")) == 1
    assert len(calls(sandbox, "POST", "upload.json")) == 2  # the failed one and the retry
    assert len(calls(sandbox, "POST", "start.json")) == 1


def test_it_does_not_start_twice_when_the_start_was_not_recorded(
    sandbox, acme, alice, wav, monkeypatch
):
    make_account(acme)
    original = JobContext.save_state
    broken = []

    def lose_start(self, **updates):
        if updates.get("started") and not broken:
            broken.append(True)  # the worker dies right after Auphonic started the production
            raise ProviderError("worker lost")
        original(self, **updates)

    monkeypatch.setattr(JobContext, "save_state", lose_start)
    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.SUCCESS, job.error
    assert broken
    assert len(calls(sandbox, "POST", "productions.json")) == 1
    assert len(calls(sandbox, "POST", "start.json")) == 1


# --- failure modes --------------------------------------------------------------------------


def test_it_retries_a_burst_of_503s(sandbox, acme, alice, wav):
    make_account(acme)
    sandbox.control(KIND, fail_next=3, fail_status=503)
    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.SUCCESS, job.error
    assert len(calls(sandbox, "POST", "productions.json")) == 4  # three refused, one created
    assert len(productions()) == 1


def test_it_waits_as_long_as_a_429_asks(sandbox, acme, alice, wav):
    make_account(acme)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.remote_id
    sandbox.control(KIND, fail_next=1, fail_status=429, retry_after=120)
    before = timezone.now()
    tasks.run_job(job.pk)  # the poll meets the 429
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert job.transient_errors == 1 and "429" in job.error
    assert job.next_poll_at >= before + timedelta(seconds=120)
    job = drive(job)
    assert job.status == Job.Status.SUCCESS, job.error


def test_it_disables_an_account_whose_key_is_refused(sandbox, acme, alice, wav):
    account = make_account(acme, key="bad-key")
    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST), account=account))
    assert job.status == Job.Status.FAILED
    assert "reconnect the account" in job.error
    assert "401" in job.error and "bad-key" not in job.error
    account.refresh_from_db()
    assert account.disabled and "401" in account.last_error
    (only,) = calls(sandbox)
    assert only["path"] == api_path("productions.json")


def test_it_fails_at_once_when_auphonic_rejects_the_production(sandbox, acme, alice, wav):
    make_account(acme)
    preset = make_preset(acme, {**PODCAST, "preset": "noSuchPresetAnywhere01"})
    job = drive(make_job(acme, alice, wav, preset))
    assert job.status == Job.Status.FAILED
    assert "400" in job.error and "preset: Preset 'noSuchPresetAnywhere01' does not exist" in (
        job.error
    )
    assert len(calls(sandbox)) == 1
    assert productions() == {}


def test_it_reports_auphonics_error_message(sandbox, acme, alice, wav):
    make_account(acme)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST), start=False)
    # The input turns out undecodable once Auphonic processes it.
    Path(job.item.input_file.path).write_bytes(b"RIFF not really a wave file" * 100)
    Job.objects.filter(pk=job.pk).update(stage="queued")
    job = drive(job)
    assert job.status == Job.Status.FAILED
    assert job.error.startswith("Auphonic: File could not be decoded")
    assert calls(sandbox, "GET", f"production/{job.remote_id}.json")


def test_it_fails_with_the_message_of_a_failed_production(sandbox, acme, alice, wav):
    make_account(acme)
    sandbox.control(KIND, fail_jobs="Input file is too short for the leveler.")
    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.FAILED
    assert job.error == "Auphonic: Input file is too short for the leveler."


def test_it_keeps_running_through_unknown_statuses(sandbox, acme, alice, wav):
    make_account(acme)
    sandbox.control(KIND, unknown_status=2, drop_webhooks=True)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST))
    job = drive(job, until=lambda j: j.stage == "Sandbox Mystery Stage")
    assert job.status == Job.Status.RUNNING
    job = drive(job)
    assert job.status == Job.Status.SUCCESS, job.error


def test_it_completes_by_polling_when_webhooks_are_lost(sandbox, acme, alice, wav):
    make_account(acme)
    sandbox.control(KIND, drop_webhooks=True)
    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.SUCCESS, job.error
    assert calls(sandbox, "GET", "status.json")
    assert job.outputs.count() == 1


def test_it_times_out_a_stalled_production(sandbox, acme, alice, wav):
    make_account(acme)
    sandbox.control(KIND, stall=True)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST))
    job = drive(job, until=lambda j: j.stage == "Audio Processing")
    # Short media: the limit is the 10-minute floor. Nine minutes without news is fine...
    Job.objects.filter(pk=job.pk).update(progress_at=timezone.now() - timedelta(minutes=9))
    tasks.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    # ...eleven is not.
    Job.objects.filter(pk=job.pk).update(progress_at=timezone.now() - timedelta(minutes=11))
    tasks.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "made no progress" in job.error and "timed out" in job.error


def test_it_stops_the_production_when_the_job_is_cancelled(sandbox, acme, alice, wav):
    make_account(acme)
    sandbox.control(KIND, stall=True)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST))
    job = drive(job, until=lambda j: j.stage == "Audio Processing")
    response = alice.api.post(f"/api/v1/jobs/{job.pk}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    (stop,) = calls(sandbox, "POST", "stop.json")
    assert stop["path"] == api_path(f"production/{job.remote_id}/stop.json")
    assert stop["headers"]["Authorization"] == f"bearer {API_KEY}"
    assert productions()[job.remote_id]["status"] == 10


# --- credentials ------------------------------------------------------------------------------


def test_it_never_shows_the_api_key(sandbox, acme, alice, charlie, wav):
    secret = "aph-live-key-DO-NOT-SHOW-93a1"
    response = alice.api.post(
        "/api/v1/provider-accounts",
        {"provider": KIND, "credentials": {"api_key": secret}, "test": True},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert secret not in response.content.decode()
    body = response.json()
    assert body["identity"].startswith("sandbox-") and not body["disabled"]
    pk = body["id"]
    (check,) = calls(sandbox, "GET", "user.json")
    assert check["headers"]["Authorization"] == f"bearer {secret}"

    for url in ("/api/v1/provider-accounts", f"/api/v1/provider-accounts/{pk}"):
        listed = alice.api.get(url)
        assert listed.status_code == 200 and secret not in listed.content.decode()
    assert charlie.api.get(f"/api/v1/provider-accounts/{pk}").status_code == 404

    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM media_jobs_provideraccount WHERE id = %s", [pk])
        (raw,) = cursor.fetchone()
    assert secret not in str(raw)  # encrypted at rest

    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.SUCCESS, job.error
    shown = alice.api.get(f"/api/v1/jobs/{job.pk}")
    assert shown.status_code == 200 and secret not in shown.content.decode()

    refused = alice.api.post(
        "/api/v1/provider-accounts",
        {"provider": KIND, "credentials": {"api_key": "bad-key-123"}, "test": True},
        format="json",
    )
    assert refused.status_code == 400
    assert "refused" in refused.json()["detail"] and "bad-key-123" not in refused.content.decode()
    assert ProviderAccount.objects.filter(workspace=acme).count() == 1


# --- webhooks -------------------------------------------------------------------------------


def test_its_webhook_makes_the_job_poll_at_once(sandbox, acme, alice, wav):
    make_account(acme)
    # Long enough that the submit has handed the job back before Auphonic calls.
    sandbox.control(KIND, processing_delay=2)
    job = make_job(acme, alice, wav, make_preset(acme, PODCAST))
    # Nothing here polls: only the emulator's webhook can make the job finish.
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, status=Job.Status.SUCCESS).first())
    assert job.outputs.count() == 1
    finished = job.finished_at

    hook = f"{sandbox.url}/hooks/auphonic/{job.pk}"
    form = {"uuid": job.remote_id, "status": "3", "status_string": "Done"}
    assert requests.post(f"{hook}/wrong-token", data=form, timeout=10).status_code == 404
    again = requests.post(f"{hook}/{job.webhook_token}", data=form, timeout=10)
    assert again.status_code == 200 and again.json()["queued"] is False
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESS and job.finished_at == finished
    assert job.outputs.count() == 1


# --- OAuth2 ---------------------------------------------------------------------------------


def start_oauth(client: Client, slug: str = "acme") -> str:
    """Ask the portal to connect; return the provider's authorization URL it redirects to."""
    response = client.get(f"/providers/{KIND}/connect/{slug}/")
    assert response.status_code == 302, response.content
    return response["Location"]


def consent(authorize_url: str) -> str:
    """Visit the provider's consent page; return the callback path and query it sends back."""
    response = requests.get(authorize_url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["Location"])
    return f"{back.path}?{back.query}"


def test_it_connects_an_oauth_account_and_uses_its_token(sandbox, acme, alice, wav):
    client = Client()
    client.force_login(alice.user)
    url = start_oauth(client)
    assert url.startswith(settings.PROVIDER_BASE_URLS["auphonic_oauth"] + "authorize/")
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == ["sandbox-client"]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == [f"{settings.SITE_URL}/providers/auphonic/callback/"]
    assert query["state"] == [client.session[connections.SESSION_KEY]["state"]]

    callback = consent(url)
    done = client.get(callback)
    assert done.status_code == 302 and done["Location"] == "/w/acme/accounts/"

    account = ProviderAccount.objects.get(workspace=acme, provider=KIND)
    assert account.auth_kind == "oauth2_code"
    assert account.identity == "sandbox-oauth-user"
    token = account.credentials["access_token"]
    assert token.startswith("aphsbx_") and account.credentials.get("refresh_token")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credentials FROM media_jobs_provideraccount WHERE id = %s", [account.pk]
        )
        (raw,) = cursor.fetchone()
    assert token not in str(raw)  # encrypted at rest

    (exchange,) = calls(sandbox, "POST", "oauth2/token/")
    code = parse_qs(urlsplit(callback).query)["code"][0]
    assert exchange["form"] == {
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"{settings.SITE_URL}/providers/auphonic/callback/",
    }

    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.SUCCESS, job.error
    assert job.provider_account_id == account.pk
    (create,) = calls(sandbox, "POST", "productions.json")
    assert create["headers"]["Authorization"] == f"Bearer {token}"

    # An expiring token is renewed with the refresh token before the next call.
    ProviderAccount.objects.filter(pk=account.pk).update(
        token_expires_at=timezone.now() + timedelta(seconds=30)
    )
    account.refresh_from_db()
    assert connections.account_test(account=account) == "sandbox-oauth-user"
    refresh = calls(sandbox, "POST", "oauth2/token/")[-1]
    assert refresh["form"]["grant_type"] == "refresh_token"
    account.refresh_from_db()
    assert account.credentials["access_token"] not in ("", token)
    assert calls(sandbox, "GET", "user.json")[-1]["headers"]["Authorization"] == (
        f"Bearer {account.credentials['access_token']}"
    )


def test_it_asks_for_a_reconnect_when_an_oauth_token_expires_without_refresh_token(
    sandbox, acme, alice, wav
):
    client = Client()
    client.force_login(alice.user)
    client.get(consent(start_oauth(client)))
    account = ProviderAccount.objects.get(workspace=acme, provider=KIND)
    creds = {"access_token": account.credentials["access_token"]}  # Auphonic gave no refresh
    ProviderAccount.objects.filter(pk=account.pk).update(
        credentials=creds, token_expires_at=timezone.now() - timedelta(minutes=1)
    )
    before = len(calls(sandbox))
    job = drive(make_job(acme, alice, wav, make_preset(acme, PODCAST)))
    assert job.status == Job.Status.FAILED and "reconnect the account" in job.error
    account.refresh_from_db()
    assert account.disabled
    assert len(calls(sandbox)) == before  # nothing was sent with a dead token


def test_it_refuses_an_oauth_callback_with_a_bad_state(sandbox, acme, alice):
    client = Client()
    client.force_login(alice.user)
    callback = consent(start_oauth(client))
    forged = callback.replace("state=", "state=forged")
    response = client.get(forged)
    assert response.status_code == 403
    assert not ProviderAccount.objects.filter(workspace=acme).exists()
    assert not calls(sandbox, "POST", "oauth2/token/")


def test_it_shows_the_providers_refusal_when_the_user_denies_access(sandbox, acme, alice):
    emulator(KIND).extra["oauth_deny"] = True
    client = Client()
    client.force_login(alice.user)
    callback = consent(start_oauth(client))
    assert "error=access_denied" in callback
    response = client.get(callback, follow=True)
    assert response.status_code == 200
    assert "The provider did not connect the account: The user denied access." in (
        response.content.decode()
    )
    assert not ProviderAccount.objects.filter(workspace=acme).exists()


def test_it_shows_an_error_when_the_code_is_refused(sandbox, acme, alice):
    client = Client()
    client.force_login(alice.user)
    callback = consent(start_oauth(client))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    response = client.get(callback.replace(code, "expired-code"), follow=True)
    assert response.status_code == 200
    assert "invalid_grant" in response.content.decode()
    assert not ProviderAccount.objects.filter(workspace=acme).exists()


def test_a_member_cannot_connect_an_oauth_account(sandbox, acme, bob):
    client = Client()
    client.force_login(bob.user)
    response = client.get(f"/providers/{KIND}/connect/acme/")
    assert response.status_code == 403
    assert connections.SESSION_KEY not in client.session
    assert not calls(sandbox)


# --- the emulator itself ----------------------------------------------------------------------


def test_the_emulator_keeps_auphonics_contract(sandbox, wav, tmp_path):
    base = settings.PROVIDER_BASE_URLS[KIND]
    auth = {"Authorization": f"bearer {API_KEY}"}

    refused = requests.get(f"{base}user.json", timeout=10)
    assert refused.status_code == 401
    body = refused.json()
    assert set(body) == {"status_code", "error_code", "error_message", "form_errors", "data"}
    assert body["status_code"] == 401 and body["error_message"] and body["data"] == {}

    bad = requests.post(
        f"{base}productions.json",
        json={"algorithms": {"loudnesstarget": -40, "hipfilter": True, "wobble": True}},
        headers=auth,
        timeout=10,
    )
    assert bad.status_code == 400
    assert bad.json()["form_errors"]["algorithms"] == [
        "loudnesstarget: -40 is not between -31 and -13 LUFS.",
        "Unknown algorithm 'wobble'.",
    ]

    # The Simple API: upload, preset, metadata and start in one multipart request.
    with wav.open("rb") as fh:
        created = requests.post(
            f"{base}simple/productions.json",
            data={
                "preset": "sandboxPodcastPreset16",
                "title": "Simple",
                "hipfilter": "true",
                "action": "start",
            },
            files={"input_file": ("simple.wav", fh)},
            headers=auth,
            timeout=30,
        )
    assert created.status_code == 200, created.text
    uuid = created.json()["data"]["uuid"]
    assert len(uuid) == 22 and uuid.isalnum()

    def done():
        answer = requests.get(f"{base}production/{uuid}/status.json", headers=auth, timeout=10)
        return answer.json()["data"]["status"] in (2, 3) and answer.json()["data"]

    assert wait_for(done) == {"status": 3, "status_string": "Done"}
    production = requests.get(f"{base}production/{uuid}.json", headers=auth, timeout=10).json()
    data = production["data"]
    assert data["metadata"] == {"title": "Simple"} and data["preset"] == "sandboxPodcastPreset16"
    assert data["statistics"]["levels"]["output"]["loudness"][1] == "LUFS"
    assert data["statistics"]["levels"]["output"]["loudness"][0] == pytest.approx(-16, abs=1)
    (result,) = data["output_files"]
    assert result["filename"] == "simple.mp3"
    # A result needs the credentials, and answers with a redirect to the file.
    assert requests.get(result["download_url"], timeout=10).status_code == 401
    hop = requests.get(result["download_url"], headers=auth, allow_redirects=False, timeout=10)
    assert hop.status_code == 302
    fetched = requests.get(result["download_url"], headers=auth, timeout=30)
    (tmp_path / "simple.mp3").write_bytes(fetched.content)
    assert engine.probe(tmp_path / "simple.mp3").format_name == "mp3"

    # Another account's production does not exist for this one.
    other = {"Authorization": "bearer someone-else"}
    missing = requests.get(f"{base}production/{uuid}.json", headers=other, timeout=10)
    assert missing.status_code == 404 and missing.json()["status_code"] == 404
