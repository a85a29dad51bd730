"""Audioscrape: the adapter against its emulator over real HTTP, and the tolerant readers."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.db import transaction
from django.utils import timezone

from media_jobs import services, tasks, tracking
from media_jobs.connections import account_create
from media_jobs.models import Job, MediaItem, Preset, ProviderAccount
from media_jobs.providers import get_provider
from media_jobs.providers.audioscrape import (
    normalize_transcript,
    remote_status,
    srt_time,
    transcript_srt,
    transcript_text,
)
from media_jobs.providers.base import FAILED, RUNNING, SUCCESS
from media_jobs.providers.context import JobContext
from media_jobs.samples import speech_like
from media_jobs.sandbox import audioscrape as emulated
from tests.remote import drive

KIND = "audioscrape"
KEY = "as-live-5f2c9e0b7d41a8"
remote = pytest.mark.django_db(transaction=True, serialized_rollback=True)
SRT_CUE = re.compile(r"^\d+\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n.+$", re.M)


@pytest.fixture
def account(acme) -> ProviderAccount:
    return account_create(workspace=acme, provider=KIND, credentials={"api_key": KEY})


@pytest.fixture
def preset(acme) -> Preset:
    return Preset.objects.create(
        workspace=acme,
        slug="transcribe",
        name="Transcribe",
        provider=KIND,
        params={"dataset_id": 123},
    )


def make_item(acme, alice, tmp_path: Path, name: str = "interview.wav") -> MediaItem:
    path = speech_like(tmp_path / name, seconds=6)
    return services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"),
        path=path,
        filename=name,
        title="Q3 interview",
        description="Discovery call with ACME",
        user=alice.user,
    )


@pytest.fixture
def item(acme, alice, tmp_path) -> MediaItem:
    return make_item(acme, alice, tmp_path)


def start(item: MediaItem, preset: Preset, **kwargs) -> Job:
    """Create the job; in sync mode its first run (the submit) happens at commit."""
    with transaction.atomic():
        job = services.job_create(item=item, preset=preset, **kwargs)
    job.refresh_from_db()
    return job


def uploads(sandbox) -> list[dict]:
    return sandbox.requests(KIND, "POST", "/api/datasets/")


def items_created(sandbox) -> int:
    return len(sandbox.emulator(KIND).jobs)


# --- a whole job ------------------------------------------------------------------------------


@remote
def test_it_transcribes_an_upload_into_three_files_and_the_item(
    sandbox, account, preset, item, media_root
):
    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [upload] = uploads(sandbox)
    assert upload["path"] == "/sandbox/audioscrape/api/datasets/123/items"
    assert upload["content_type"] == "multipart/form-data"
    assert upload["headers"]["Authorization"] == f"Bearer {KEY}"
    assert upload["form"] == {"title": "Q3 interview", "description": "Discovery call with ACME"}
    assert upload["files"] == {"audio": "interview.wav"}
    # The streamed multipart body arrived byte for byte.
    stored = sandbox.emulator(KIND).jobs[job.remote_id]["audio"]
    assert Path(stored).read_bytes() == (media_root / item.input_file.name).read_bytes()
    assert job.remote_id == "84217" and job.remote_state["intake"] == "multipart"
    polls = sandbox.requests(KIND, "GET", f"/api/items/{job.remote_id}")
    assert {c["path"] for c in polls} == {
        f"/sandbox/audioscrape/api/items/{job.remote_id}",
        f"/sandbox/audioscrape/api/items/{job.remote_id}/transcript",
    }
    assert all(c["headers"]["Authorization"] == f"Bearer {KEY}" for c in polls)

    item.refresh_from_db()
    transcript = item.transcript
    assert item.status == MediaItem.Status.PUBLISHED
    assert transcript["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert transcript["language"] == "en"
    assert transcript["text"].startswith("Welcome back to the show.")
    segments = transcript["segments"]
    assert len(segments) == 4 and segments[0]["start"] == 0
    # Timestamps are scaled to the real 6 s of audio.
    assert 5.0 < segments[-1]["end"] <= 6.01
    words = len(transcript["text"].split())
    assert job.statistics == {"words": words, "speakers": 2, "duration": pytest.approx(6.0, 0.01)}

    outputs = {o.format: o for o in job.outputs.all()}
    assert set(outputs) == {"json", "txt", "srt"}
    assert {o.filename for o in outputs.values()} == {
        "interview.transcript.json",
        "interview.transcript.txt",
        "interview.transcript.srt",
    }
    assert all(o.kind == "media" for o in outputs.values())
    for o in outputs.values():
        with o.file.open("rb") as fh:
            data = fh.read()
        assert o.size == len(data)
    with outputs["json"].file.open("rb") as fh:
        assert json.load(fh) == transcript
    with outputs["txt"].file.open("rb") as fh:
        text = fh.read().decode()
    assert (
        text.splitlines()[0]
        == "SPEAKER_00: Welcome back to the show. Today we talk about loudness."
    )
    assert len(text.splitlines()) == 4
    with outputs["srt"].file.open("rb") as fh:
        srt = fh.read().decode()
    cues = SRT_CUE.findall(srt)
    assert len(cues) == 4
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,")
    assert cues[-1][1].startswith("00:00:05,")
    assert "SPEAKER_01: Thanks for having me." in srt


@remote
def test_it_hands_audioscrape_an_https_storage_link(
    sandbox, account, preset, item, tmp_path, settings, monkeypatch, media_root
):
    from tests.tls import https_directory, make_tls_files

    tls = make_tls_files(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "interview.wav").write_bytes((media_root / item.input_file.name).read_bytes())
    settings.INTAKE_URL_ALLOW_NETWORKS = ["127.0.0.2/32"]
    settings.INTAKE_URL_CA_BUNDLE = str(tls.ca)
    with https_directory(site, tls) as base:
        url = f"{base}/interview.wav"
        monkeypatch.setattr(JobContext, "input_url", lambda self: url)
        job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [upload] = uploads(sandbox)
    assert upload["content_type"] == "application/json"
    assert upload["json"] == {
        "audio_url": url,
        "title": "Q3 interview",
        "description": "Discovery call with ACME",
    }
    assert job.remote_state["intake"] == "url"
    stored = sandbox.emulator(KIND).jobs[job.remote_id]["audio"]
    assert Path(stored).read_bytes() == (site / "interview.wav").read_bytes()
    item.refresh_from_db()
    assert item.transcript["speakers"] == ["SPEAKER_00", "SPEAKER_01"]


@remote
@pytest.mark.parametrize(
    "url, calls",
    [
        # Audioscrape refuses loopback (422): nothing was created, so the file goes up instead.
        ("https://127.0.0.3/workspaces/1/input/interview.wav?X-Amz-Signature=abc", 2),
        # A plain-http store would be refused with 400: upload without asking.
        ("http://127.0.0.1:9000/bucket/interview.wav?X-Amz-Signature=abc", 1),
    ],
)
def test_it_uploads_the_file_when_audioscrape_cannot_use_the_link(
    sandbox, account, preset, item, monkeypatch, url, calls
):
    monkeypatch.setattr(JobContext, "input_url", lambda self: url)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    sent = uploads(sandbox)
    assert len(sent) == calls
    assert sent[-1]["files"] == {"audio": "interview.wav"}
    assert items_created(sandbox) == 1 and job.remote_state["intake"] == "multipart"


# --- exactly one remote item -------------------------------------------------------------------


@remote
def test_it_creates_one_item_when_the_task_runs_twice(sandbox, account, preset, item):
    job = start(item, preset, start=False)
    Job.objects.filter(pk=job.pk).update(stage="queued")  # queued, as a broker would deliver it

    tasks.run_job(job.pk)
    tasks.run_job(job.pk)

    assert len(uploads(sandbox)) == 1
    assert drive(job).status == Job.Status.SUCCESS
    assert len(uploads(sandbox)) == 1 and items_created(sandbox) == 1


@remote
def test_it_resumes_the_same_item_after_a_crash_past_save_remote_id(
    sandbox, account, preset, item, monkeypatch
):
    original = JobContext.save_state
    crashed = []

    def crash_once(self, **updates):
        if "intake" in updates and not crashed:
            crashed.append(True)
            raise RuntimeError("worker died")
        return original(self, **updates)

    monkeypatch.setattr(JobContext, "save_state", crash_once)
    with pytest.raises(RuntimeError, match="worker died"):
        start(item, preset)  # the worker dies right after the item id was saved
    job = Job.objects.get(item=item)

    assert crashed and job.remote_id == "84217" and not job.remote_state.get("submitted")
    assert job.status == Job.Status.RUNNING and len(uploads(sandbox)) == 1
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks.reconcile_jobs()["resumed"] == [job.pk]

    job = drive(job)
    assert job.status == Job.Status.SUCCESS, job.error
    assert len(uploads(sandbox)) == 1 and items_created(sandbox) == 1
    assert job.remote_id == "84217"


# --- failures ---------------------------------------------------------------------------------


@remote
def test_it_retries_a_burst_of_503s(sandbox, account, preset, item):
    sandbox.control(KIND, fail_next=3, fail_status=503)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(uploads(sandbox)) == 4 and items_created(sandbox) == 1


@remote
def test_it_waits_for_retry_after_on_429(sandbox, account, preset, item):
    sandbox.control(KIND, fail_next=1, fail_status=429, retry_after=120)
    before = timezone.now()

    job = start(item, preset)

    assert job.status == Job.Status.RUNNING and not job.remote_id
    assert job.next_poll_at >= before + timedelta(seconds=120)
    assert "429" in job.error and job.transient_errors == 1
    assert drive(job).status == Job.Status.SUCCESS
    assert len(uploads(sandbox)) == 2 and items_created(sandbox) == 1


@remote
def test_it_disables_the_account_when_the_key_is_refused(sandbox, acme, preset, item):
    account = account_create(workspace=acme, provider=KIND, credentials={"api_key": "bad-key"})

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert "reconnect the account" in job.error
    account.refresh_from_db()
    assert account.disabled and "Missing or invalid API key" in account.last_error
    assert len(sandbox.requests(KIND)) == 1
    assert "bad-key" not in job.error + account.last_error


@remote
def test_it_disables_the_account_when_the_key_expires_mid_job(sandbox, account, preset, item):
    job = start(item, preset)
    assert job.remote_id
    sandbox.control(KIND, expire_tokens=True)
    calls = len(sandbox.requests(KIND))

    job = drive(job)

    assert job.status == Job.Status.FAILED and "reconnect the account" in job.error
    account.refresh_from_db()
    assert account.disabled
    assert len(sandbox.requests(KIND)) == calls + 1


@remote
@pytest.mark.parametrize(
    "case, message",
    [
        ("dataset", "The Audioscrape dataset 987 does not exist or this account can't reach it"),
        ("format", "Audioscrape does not accept this audio format in the dataset (415: Audio"),
        ("size", "Audioscrape refused the file as too large for this plan (413: File exceeds"),
    ],
)
def test_it_fails_at_once_when_the_upload_is_rejected(
    sandbox, acme, alice, account, preset, tmp_path, monkeypatch, case, message
):
    if case == "dataset":
        preset.params = {"dataset_id": 987}
        preset.save()
    if case == "size":
        monkeypatch.setattr(emulated, "MAX_UPLOAD_BYTES", 10_000)
    item = make_item(acme, alice, tmp_path, "talk.opus" if case == "format" else "talk.wav")

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert job.error.startswith(message), job.error
    assert len(sandbox.requests(KIND)) == 1 and items_created(sandbox) == 0
    account.refresh_from_db()
    assert not account.disabled


@remote
def test_it_keeps_polling_through_unknown_statuses(sandbox, account, preset, item):
    sandbox.control(KIND, unknown_status=2, processing_delay=1.0)

    job = drive(start(item, preset), until=lambda j: j.stage == emulated.UNDOCUMENTED_STATUS)
    assert job.status == Job.Status.RUNNING
    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert sandbox.emulator(KIND).knobs.unknown_status == 0


@remote
def test_it_fails_with_audioscrapes_message(sandbox, account, preset, item):
    sandbox.control(KIND, fail_jobs="GPU pool out of memory")

    job = drive(start(item, preset))

    assert job.status == Job.Status.FAILED
    assert job.error == "Audioscrape failed to transcribe the item: GPU pool out of memory."
    item.refresh_from_db()
    assert item.status == MediaItem.Status.FAILED and item.transcript is None
    assert not job.outputs.exists()


@remote
def test_it_gives_up_when_a_published_item_never_gets_a_transcript(
    sandbox, account, preset, item, monkeypatch, settings
):
    settings.PROVIDER_TRANSIENT_LIMIT = 2
    monkeypatch.setattr(emulated, "conversation", lambda duration: None)

    job = drive(start(item, preset))

    assert job.status == Job.Status.FAILED
    assert job.error == (
        f"Gave up after 2 retries: Audioscrape published item {job.remote_id} "
        "without a transcript yet."
    )
    # Each attempt asked the transcript endpoint, which answered 404 (tolerated, then retried).
    assert len(sandbox.requests(KIND, "GET", "/transcript")) == 3
    assert not job.outputs.exists()


@remote
def test_it_times_out_a_stalled_item(sandbox, account, preset, item):
    sandbox.control(KIND, stall=True)
    job = drive(start(item, preset), until=lambda j: j.stage == "processing")
    limit = tracking.stall_limit(job)
    assert limit == timedelta(minutes=10)  # max(10 min, 4 x 6 s + 5 min)

    def poll_as_if_last_moved(ago: timedelta) -> Job:
        now = timezone.now()
        Job.objects.filter(pk=job.pk).update(progress_at=now - ago, next_poll_at=now)
        tracking.jobs_enqueue_due()
        return Job.objects.get(pk=job.pk)

    assert poll_as_if_last_moved(limit - timedelta(minutes=1)).status == Job.Status.RUNNING
    failed = poll_as_if_last_moved(limit + timedelta(minutes=1))
    assert failed.status == Job.Status.FAILED
    assert "made no progress for 0:10:00; timed out" in failed.error


@remote
def test_a_cancelled_job_stops_polling_without_a_remote_call(sandbox, account, preset, item):
    sandbox.control(KIND, processing_delay=2.0)
    job = start(item, preset)
    assert get_provider(KIND).can_cancel is False  # the upload API documents no cancel

    with transaction.atomic():
        assert services.job_cancel(job=job)
    tracking.jobs_enqueue_due(now=timezone.now() + timedelta(hours=1))

    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert [(c["method"], c["path"].rsplit("/api/", 1)[1]) for c in sandbox.requests(KIND)] == [
        ("POST", "datasets/123/items")
    ]


# --- accounts and secrets ---------------------------------------------------------------------


@remote
def test_the_api_key_never_comes_back(sandbox, alice, charlie, acme, preset, item):
    secret = "as-live-9d8c7b6a5f4e3d2c1b0a"
    r = alice.api.post(
        "/api/v1/provider-accounts",
        {"provider": KIND, "credentials": {"api_key": secret}, "test": True},
        format="json",
    )
    assert r.status_code == 201, r.content
    account_id = r.json()["id"]
    assert r.json()["identity"] == "Audioscrape API key"
    [check] = sandbox.requests(KIND)
    assert (check["method"], check["path"]) == ("GET", "/sandbox/audioscrape/api/items/0")
    assert check["headers"]["Authorization"] == f"Bearer {secret}"

    job = drive(start(item, preset))
    assert job.status == Job.Status.SUCCESS, job.error
    answers = [
        r,
        alice.api.get("/api/v1/provider-accounts"),
        alice.api.get(f"/api/v1/provider-accounts/{account_id}"),
        alice.api.get(f"/api/v1/jobs/{job.pk}"),
        alice.api.get(f"/api/v1/items/{item.pk}"),
    ]
    for answer in answers:
        assert answer.status_code in (200, 201)
        assert secret not in answer.content.decode()
    assert charlie.api.get(f"/api/v1/provider-accounts/{account_id}").status_code == 404


@remote
def test_a_refused_key_creates_no_account(sandbox, alice):
    r = alice.api.post(
        "/api/v1/provider-accounts",
        {"provider": KIND, "credentials": {"api_key": "bad-key-1"}, "test": True},
        format="json",
    )

    assert r.status_code == 400
    assert "refused" in r.json()["detail"] and "bad-key-1" not in r.content.decode()
    assert not ProviderAccount.objects.filter(provider=KIND).exists()


# --- the emulator is strict -------------------------------------------------------------------


@remote
@pytest.mark.parametrize(
    "method, path, kwargs, status",
    [
        ("POST", "datasets/1/items", {"files": {"audio": ("a.wav", b"x")}, "key": ""}, 401),
        ("GET", "items/1", {"key": "bad-key"}, 401),
        ("POST", "datasets/987/items", {"files": {"audio": ("a.wav", b"x")}}, 404),
        ("POST", "datasets/1/items", {"data": {"title": "no file"}, "files": {"x": b"1"}}, 400),
        ("POST", "datasets/1/items", {"files": {"audio": ("a.aac", b"x")}}, 415),
        ("POST", "datasets/1/items", {"json": {"audio_url": "http://example.com/a.mp3"}}, 400),
        ("POST", "datasets/1/items", {"json": {"title": "no url"}}, 400),
        ("POST", "datasets/1/items", {"json": {"audio_url": "https://127.0.0.1/a.mp3"}}, 422),
        ("POST", "datasets/1/items", {"json": {"audio_url": "https://x.example/a.exe"}}, 415),
        ("POST", "datasets/1/items", {"data": "not json", "type": "application/json"}, 400),
        ("POST", "datasets/1/items", {"data": "audio", "type": "text/plain"}, 400),
        ("GET", "items/0", {}, 404),
        ("GET", "items/0/transcript", {}, 404),
    ],
)
def test_the_emulator_answers_like_the_documented_api(sandbox, method, path, kwargs, status):
    key = kwargs.pop("key", KEY)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if "type" in kwargs:
        headers["Content-Type"] = kwargs.pop("type")
    url = f"{sandbox.url}/sandbox/audioscrape/api/{path}"

    r = requests.request(method, url, headers=headers, timeout=10, **kwargs)

    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["error"]
    assert items_created(sandbox) == 0


@remote
def test_the_emulator_keeps_items_to_their_owner(sandbox, tmp_path):
    audio = speech_like(tmp_path / "a.wav", seconds=1)
    base = f"{sandbox.url}/sandbox/audioscrape/api"
    with audio.open("rb") as fh:
        r = requests.post(
            f"{base}/datasets/5/items",
            headers={"Authorization": f"Bearer {KEY}"},
            files={"audio": ("a.wav", fh)},
            timeout=10,
        )
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["message"].startswith("Audio file queued")
    item = requests.get(
        f"{base}/items/{body['item_id']}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ).json()
    assert item["title"] == "a" and item["dataset_id"] == 5
    other = requests.get(
        f"{base}/items/{body['item_id']}", headers={"Authorization": "Bearer other"}, timeout=10
    )
    assert other.status_code == 404


# --- units: parameters, statuses, transcripts --------------------------------------------------


def test_the_preset_needs_a_dataset_and_knows_its_parameters():
    provider = get_provider(KIND)
    with pytest.raises(ValueError, match="dataset_id: required"):
        provider.validate_params({})
    with pytest.raises(ValueError, match="Unknown parameters: priority"):
        provider.validate_params({"dataset_id": 1, "priority": 5})
    assert provider.validate_params({"dataset_id": "123"}) == {
        "dataset_id": 123,
        "language": "auto",
        "diarize": True,
    }


@pytest.mark.parametrize(
    "body, state, progress, stage",
    [
        ({"status": "queued"}, RUNNING, 10, "queued"),
        ({"status": "Processing"}, RUNNING, 50, "processing"),
        ({"item": {"id": 1, "status": "PUBLISHED"}}, SUCCESS, 100, "published"),
        ({"status": "speaker_identification"}, RUNNING, None, "speaker_identification"),
        ({"status": ""}, RUNNING, None, "processing"),
        ({"status": "failed", "error": "bad audio"}, FAILED, None, "failed"),
    ],
)
def test_it_maps_item_statuses(body, state, progress, stage):
    status = remote_status(body)
    assert (status.state, status.progress, status.stage) == (state, progress, stage)
    if state == FAILED:
        assert status.message == "Audioscrape failed to transcribe the item: bad audio."


SEGMENTS = [
    {"speaker": "A", "start": "0.5", "end": 2, "text": " Hello there. "},
    {"speaker_label": "B", "start_time": 2.5, "end_time": 4.25, "content": "Hi."},
]


@pytest.mark.parametrize(
    "body",
    [
        {"transcript": "Hello there. Hi.", "segments": SEGMENTS},
        {"transcript": {"text": "Hello there. Hi.", "segments": SEGMENTS}},
        {"data": {"transcript": {"segments": SEGMENTS}}},
        {"item": {"id": 3, "status": "published", "transcript": SEGMENTS}},
    ],
)
def test_it_reads_transcripts_in_any_likely_shape(body):
    transcript = normalize_transcript(body)
    assert transcript == {
        "text": "Hello there. Hi.",
        "segments": [
            {"speaker": "A", "start": 0.5, "end": 2.0, "text": "Hello there."},
            {"speaker": "B", "start": 2.5, "end": 4.25, "text": "Hi."},
        ],
        "speakers": ["A", "B"],
        "language": None,
    }
    assert transcript_text(transcript) == "A: Hello there.\nB: Hi.\n"
    assert transcript_srt(transcript, 5) == (
        "1\n00:00:00,500 --> 00:00:02,000\nA: Hello there.\n\n"
        "2\n00:00:02,500 --> 00:00:04,250\nB: Hi.\n"
    )


def test_it_finds_no_transcript_in_a_bare_item():
    assert normalize_transcript({"id": 1, "status": "published", "transcript": None}) is None
    only_text = normalize_transcript({"transcript": "Just words."})
    assert only_text["segments"] == [] and transcript_text(only_text) == "Just words.\n"
    assert transcript_srt(only_text, 3725.5) == "1\n00:00:00,000 --> 01:02:05,500\nJust words.\n"
    assert srt_time(1.0) == "00:00:01,000"
