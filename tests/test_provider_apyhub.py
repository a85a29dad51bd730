"""ApyHub: the adapter against its emulator over real HTTP, and the tolerant readers."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.db import transaction
from django.utils import timezone

from media_jobs import engine, services, tasks, tracking
from media_jobs.connections import account_create
from media_jobs.models import Job, MediaItem, Preset, ProviderAccount
from media_jobs.providers import get_provider
from media_jobs.providers.apyhub import (
    job_id_of,
    remote_status,
    result_url,
    same_origin,
    seconds,
)
from media_jobs.providers.base import FAILED, RUNNING, SUCCESS
from media_jobs.providers.context import JobContext
from media_jobs.samples import speech_like, video_with_tone
from media_jobs.sandbox import apyhub as emulated
from tests.remote import drive

KIND = "apyhub"
KEY = "apy-live-7c41d09e5b2a83f6"
API = "/sandbox/apyhub/job/extract/video/audio"
remote = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def account(acme) -> ProviderAccount:
    return account_create(workspace=acme, provider=KIND, credentials={"api_key": KEY})


def make_preset(acme, **params) -> Preset:
    return Preset.objects.create(
        workspace=acme,
        slug=f"extract-{len(Preset.objects.filter(workspace=acme))}",
        name="Extract audio",
        provider=KIND,
        params=params,
    )


@pytest.fixture
def preset(acme) -> Preset:
    return make_preset(acme)


def make_item(acme, alice, tmp_path: Path, name: str = "clip.mp4", seconds: float = 6) -> MediaItem:
    path = tmp_path / name
    if name.endswith(".mp4"):
        video_with_tone(path, seconds=seconds)
    else:
        speech_like(path, seconds=seconds)
    return services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"),
        path=path,
        filename=name,
        title="Launch clip",
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


def submits(sandbox) -> list[dict]:
    return sandbox.requests(KIND, "POST", f"{API}/")


def jobs_created(sandbox) -> int:
    return len(sandbox.emulator(KIND).jobs)


def headers(call: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in call["headers"].items()}


def wait_until_done(sandbox, job_id: str, timeout: float = 60) -> dict:
    """Wait for the emulator's background extraction (no poll of ours involved)."""
    deadline = time.monotonic() + timeout
    while True:
        with sandbox.emulator(KIND).lock:
            remote_job = dict(sandbox.emulator(KIND).jobs[job_id])
        if remote_job["status"] in ("completed", "failed"):
            return remote_job
        assert time.monotonic() < deadline, f"emulated job still {remote_job['status']}"
        time.sleep(0.05)


def output_facts(job: Job):
    [output] = job.outputs.all()
    return output, engine.probe(output.file.path)


# --- a whole job ------------------------------------------------------------------------------


@remote
def test_it_extracts_the_whole_video_into_our_storage(sandbox, account, preset, item):
    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [submit] = submits(sandbox)
    assert submit["path"] == f"{API}/file"
    assert submit["query"] == {"persistent": "false"}
    assert submit["content_type"] == "multipart/form-data"
    assert headers(submit)["apy-token"] == KEY
    # duration is the whole video, not ApyHub's 2 s default.
    assert submit["form"] == {
        "start_time": "0",
        "duration": seconds(item.duration),
        "output_format": "mp3",
    }
    assert submit["files"] == {"video": "clip.mp4"}
    # The streamed multipart body arrived byte for byte.
    remote_job = sandbox.emulator(KIND).jobs[job.remote_id]
    assert Path(remote_job["video"]).read_bytes() == Path(item.input_file.path).read_bytes()

    calls = [(c["method"], c["path"]) for c in sandbox.requests(KIND)]
    status_path = f"{API}/status/{job.remote_id}"
    link_path = f"/sandbox/apyhub/_results/{remote_job['token']}/clip.mp3"
    assert calls[0] == ("POST", f"{API}/file")
    assert set(calls[1:-1]) == {("GET", status_path)}
    # The poll that saw "completed" is followed at once by the status read and the download.
    assert calls[-1] == ("GET", link_path)
    polls = sandbox.requests(KIND, "GET", status_path)
    assert all(headers(c)["apy-token"] == KEY for c in polls)
    # The link is on another host (the storage): our token never goes there.
    [download] = sandbox.requests(KIND, "GET", "/_results/")
    assert "apy-token" not in headers(download)

    output, facts = output_facts(job)
    assert (output.format, output.filename, output.kind) == ("mp3", "clip.mp3", "media")
    assert facts.format_name == "mp3" and not facts.has_video
    assert facts.duration == pytest.approx(item.duration, abs=0.1)
    data = Path(output.file.path).read_bytes()
    assert output.size == len(data) and len(output.checksum) == 64
    measured = engine.measure(output.file.path)
    expected = {**measured.as_dict(), "duration": round(facts.duration, 3)}
    assert job.statistics == {"output": expected}
    assert output.statistics == expected
    # A 440 Hz tone at lavfi's default level, extracted without processing.
    assert measured.integrated == pytest.approx(-22, abs=1.5)
    item.refresh_from_db()
    assert item.status == MediaItem.Status.PUBLISHED


@remote
def test_it_honours_start_time_and_duration(sandbox, acme, account, item):
    preset = make_preset(acme, start_time=2, duration=3, output_format="wav", persistent=True)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [submit] = submits(sandbox)
    assert submit["query"] == {"persistent": "true"}
    assert submit["form"] == {"start_time": "2", "duration": "3", "output_format": "wav"}
    output, facts = output_facts(job)
    assert (output.format, output.filename, facts.format_name) == ("wav", "clip.wav", "wav")
    assert facts.duration == pytest.approx(3, abs=0.1)
    assert job.statistics["output"]["duration"] == pytest.approx(3, abs=0.1)


@remote
def test_without_a_duration_it_takes_the_rest_of_the_video(sandbox, acme, account, item):
    preset = make_preset(acme, start_time=1.5)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [submit] = submits(sandbox)
    rest = item.duration - 1.5
    assert submit["form"]["start_time"] == "1.5"
    assert float(submit["form"]["duration"]) == pytest.approx(rest, abs=0.001)
    _, facts = output_facts(job)
    assert facts.duration == pytest.approx(rest, abs=0.1)


@remote
def test_a_job_override_moves_the_trim_window(sandbox, acme, account, item, preset):
    job = drive(start(item, preset, overrides={"video": {"start_time": 4}}))

    assert job.status == Job.Status.SUCCESS, job.error
    [submit] = submits(sandbox)
    assert submit["form"]["start_time"] == "4"
    _, facts = output_facts(job)
    assert facts.duration == pytest.approx(item.duration - 4, abs=0.1)


@remote
@pytest.mark.parametrize(
    "fmt, filename, container",
    [
        ("aac", "clip.m4a", "mp4"),
        ("ogg", "clip.ogg", "ogg"),
        ("flac", "clip.flac", "flac"),
        ("wma", "clip.wma", "asf"),
        ("ac3", "clip.ac3", "ac3"),
        ("amr", "clip.amr", "amr"),
    ],
)
def test_every_documented_format_comes_back_playable(
    sandbox, acme, alice, account, tmp_path, fmt, filename, container
):
    item = make_item(acme, alice, tmp_path, seconds=3)
    preset = make_preset(acme, output_format=fmt)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    assert submits(sandbox)[0]["form"]["output_format"] == fmt
    output, facts = output_facts(job)
    assert (output.format, output.filename) == (fmt, filename)
    assert container in facts.format_name.split(",")
    assert facts.duration == pytest.approx(3, abs=0.15)
    assert job.statistics["output"]["integrated"] is not None


# --- exactly one remote job --------------------------------------------------------------------


@remote
def test_it_creates_one_job_when_the_task_runs_twice(sandbox, account, preset, item):
    job = start(item, preset, start=False)
    Job.objects.filter(pk=job.pk).update(stage="queued")  # queued, as a broker would deliver it

    tasks.run_job(job.pk)
    tasks.run_job(job.pk)

    assert len(submits(sandbox)) == 1
    assert drive(job).status == Job.Status.SUCCESS
    assert len(submits(sandbox)) == 1 and jobs_created(sandbox) == 1


@remote
def test_it_resumes_the_same_job_after_a_crash_past_save_remote_id(
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
        start(item, preset)  # the worker dies right after the job id was saved
    job = Job.objects.get(item=item)
    remote_id = job.remote_id

    assert crashed and remote_id in sandbox.emulator(KIND).jobs
    assert job.status == Job.Status.RUNNING and not job.remote_state.get("submitted")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks.reconcile_jobs()["resumed"] == [job.pk]

    job = drive(job)
    assert job.status == Job.Status.SUCCESS, job.error
    assert len(submits(sandbox)) == 1 and jobs_created(sandbox) == 1
    assert job.remote_id == remote_id


@remote
def test_a_failed_first_poll_resumes_the_same_job(sandbox, account, preset, item):
    job = start(item, preset)
    assert job.remote_id and job.remote_state["submitted"]
    sandbox.control(KIND, fail_next=1, fail_status=500)  # ApyHub's "unexpected error"

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(submits(sandbox)) == 1 and jobs_created(sandbox) == 1
    first_poll = sandbox.requests(KIND, "GET", "/status/")[0]
    assert first_poll["path"] == f"{API}/status/{job.remote_id}"


# --- failures ---------------------------------------------------------------------------------


@remote
def test_it_retries_a_burst_of_503s(sandbox, account, preset, item):
    sandbox.control(KIND, fail_next=3, fail_status=503)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(submits(sandbox)) == 4 and jobs_created(sandbox) == 1


@remote
def test_it_waits_for_retry_after_on_429(sandbox, account, preset, item):
    sandbox.control(KIND, fail_next=1, fail_status=429, retry_after=120)
    before = timezone.now()

    job = start(item, preset)

    assert job.status == Job.Status.RUNNING and not job.remote_id
    assert job.next_poll_at >= before + timedelta(seconds=120)
    assert "429" in job.error and job.transient_errors == 1
    assert drive(job).status == Job.Status.SUCCESS
    assert len(submits(sandbox)) == 2 and jobs_created(sandbox) == 1


@remote
def test_it_disables_the_account_when_the_token_is_refused(sandbox, acme, preset, item):
    account = account_create(workspace=acme, provider=KIND, credentials={"api_key": "bad-key"})

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert "reconnect the account" in job.error
    account.refresh_from_db()
    assert account.disabled
    assert account.last_error.startswith("ApyHub refused the account's credentials (401: Unauth")
    assert len(sandbox.requests(KIND)) == 1
    assert "bad-key" not in job.error + account.last_error


@remote
def test_it_disables_the_account_when_the_token_expires_mid_job(sandbox, account, preset, item):
    sandbox.control(KIND, processing_delay=2.0)
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
def test_it_fails_at_once_when_apyhub_refuses_the_video(sandbox, account, preset, item):
    # The stored copy got corrupted after intake: only ApyHub's decoder finds out.
    stored = Path(item.input_file.path)
    stored.write_bytes(stored.read_bytes()[:3000])

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert job.error == (
        "ApyHub refused the video (400: Invalid input: the provided file is corrupt)."
    )
    assert len(sandbox.requests(KIND)) == 1 and jobs_created(sandbox) == 0
    account.refresh_from_db()
    assert not account.disabled


@remote
@pytest.mark.parametrize(
    "name, params, message",
    [
        (
            "talk.wav",
            {},
            "ApyHub extracts audio from video files only (mp4, webm, flv, avi, mkv, mov, 3gp); "
            "talk.wav is not one.",
        ),
        ("clip.mp4", {"start_time": 30}, "start_time 30 s is past the end of the video (6.0 s)."),
    ],
)
def test_it_refuses_what_apyhub_cannot_take_before_calling(
    sandbox, acme, alice, account, tmp_path, name, params, message
):
    item = make_item(acme, alice, tmp_path, name)
    preset = make_preset(acme, **params)

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert job.error == message
    assert sandbox.requests(KIND) == []


@remote
def test_it_keeps_polling_through_unknown_statuses(sandbox, account, preset, item):
    sandbox.control(KIND, unknown_status=2, processing_delay=1.0)

    job = drive(start(item, preset), until=lambda j: j.stage == emulated.UNDOCUMENTED_STATUS)
    assert job.status == Job.Status.RUNNING
    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert sandbox.emulator(KIND).knobs.unknown_status == 0


@remote
def test_it_fails_with_apyhubs_message(sandbox, account, preset, item):
    sandbox.control(KIND, fail_jobs="Transcoder out of memory")

    job = drive(start(item, preset))

    assert job.status == Job.Status.FAILED
    assert job.error == "ApyHub could not extract the audio: Transcoder out of memory."
    assert not job.outputs.exists()
    assert sandbox.requests(KIND, "GET", "/_results/") == []


@remote
def test_it_times_out_a_stalled_job(sandbox, account, preset, item):
    sandbox.control(KIND, stall=True)
    job = drive(start(item, preset), until=lambda j: j.stage == "in-progress")
    assert job.progress == 50
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
    assert get_provider(KIND).can_cancel is False  # the job API documents no cancel

    with transaction.atomic():
        assert services.job_cancel(job=job)
    tracking.jobs_enqueue_due(now=timezone.now() + timedelta(hours=1))

    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert [(c["method"], c["path"]) for c in sandbox.requests(KIND)] == [("POST", f"{API}/file")]


# --- the 15-minute link -------------------------------------------------------------------------


@remote
def test_the_poll_that_sees_completed_collects_at_once(sandbox, account, preset, item):
    job = start(item, preset)
    wait_until_done(sandbox, job.remote_id)

    # One scheduler pass: the poll finds "completed" and the same task copies the file, so the
    # link is used seconds after the job ends, far inside its 15 minutes.
    tracking.jobs_enqueue_due(now=timezone.now() + timedelta(hours=1))

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESS, job.error
    assert len(sandbox.requests(KIND, "GET", "/_results/")) == 1


@remote
def test_an_expired_link_fails_the_job_clearly(sandbox, account, preset, item):
    job = start(item, preset)
    wait_until_done(sandbox, job.remote_id)
    with sandbox.emulator(KIND).lock:  # 16 minutes pass on the emulator's clock
        sandbox.emulator(KIND).jobs[job.remote_id]["completed_at"] -= 16 * 60

    job = drive(job)

    assert job.status == Job.Status.FAILED
    assert job.error == (
        "ApyHub's result link no longer works (410: The link has expired); it expires 15 "
        "minutes after the job ends unless persistent is set. Run the job again."
    )
    assert len(sandbox.requests(KIND, "GET", "/_results/")) == 1  # permanent: asked once
    account.refresh_from_db()
    assert not account.disabled  # the storage host refused a link, not our token
    assert not job.outputs.exists()


@remote
def test_a_persistent_link_outlives_15_minutes(sandbox, acme, account, item):
    job = start(item, make_preset(acme, persistent=True))
    wait_until_done(sandbox, job.remote_id)
    with sandbox.emulator(KIND).lock:
        sandbox.emulator(KIND).jobs[job.remote_id]["completed_at"] -= 24 * 3600

    assert drive(job).status == Job.Status.SUCCESS


# --- handing ApyHub a link instead of the bytes --------------------------------------------------


@remote
def test_it_hands_apyhub_an_https_storage_link(
    sandbox, account, preset, item, tmp_path, settings, monkeypatch
):
    from tests.tls import https_directory, make_tls_files

    tls = make_tls_files(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "clip.mp4").write_bytes(Path(item.input_file.path).read_bytes())
    settings.INTAKE_URL_ALLOW_NETWORKS = ["127.0.0.2/32"]
    settings.INTAKE_URL_CA_BUNDLE = str(tls.ca)
    with https_directory(site, tls) as base:
        url = f"{base}/clip.mp4"
        monkeypatch.setattr(JobContext, "input_url", lambda self: url)
        job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [submit] = submits(sandbox)
    assert submit["path"] == f"{API}/url" and submit["query"] == {"persistent": "false"}
    assert submit["content_type"] == "application/json"
    assert submit["json"] == {
        "url": url,
        "start_time": "0",
        "duration": seconds(item.duration),
        "output_format": "mp3",
    }
    assert job.remote_state["intake"] == "url"
    assert output_facts(job)[1].duration == pytest.approx(item.duration, abs=0.1)


@remote
@pytest.mark.parametrize(
    "url, paths",
    [
        # ApyHub cannot fetch a loopback address (400): nothing was created, so upload instead.
        ("https://127.0.0.3/workspaces/1/clip.mp4?X-Amz-Signature=abc", ["url", "file"]),
        # A plain-http store is a local stand-in ApyHub cannot reach: upload without asking.
        ("http://127.0.0.1:9000/bucket/clip.mp4?X-Amz-Signature=abc", ["file"]),
    ],
)
def test_it_uploads_the_video_when_apyhub_cannot_use_the_link(
    sandbox, account, preset, item, monkeypatch, url, paths
):
    monkeypatch.setattr(JobContext, "input_url", lambda self: url)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    assert [c["path"].rsplit("/", 1)[1] for c in submits(sandbox)] == paths
    assert jobs_created(sandbox) == 1 and job.remote_state["intake"] == "file"


# --- accounts and secrets ---------------------------------------------------------------------


@remote
def test_the_token_never_comes_back(sandbox, alice, charlie, acme, preset, item):
    secret = "apy-live-0f1e2d3c4b5a6978"
    r = alice.api.post(
        "/api/v1/provider-accounts",
        {"provider": KIND, "credentials": {"api_key": secret}, "test": True},
        format="json",
    )
    assert r.status_code == 201, r.content
    account_id = r.json()["id"]
    assert r.json()["identity"] == "apy-token …6978"
    [check] = sandbox.requests(KIND)
    assert (check["method"], check["path"]) == ("GET", f"{API}/status/mediahub-account-check")
    assert headers(check)["apy-token"] == secret

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
def test_a_refused_token_creates_no_account(sandbox, alice):
    r = alice.api.post(
        "/api/v1/provider-accounts",
        {"provider": KIND, "credentials": {"api_key": "bad-key-1"}, "test": True},
        format="json",
    )

    assert r.status_code == 400
    assert "refused" in r.json()["detail"] and "bad-key-1" not in r.content.decode()
    assert not ProviderAccount.objects.filter(provider=KIND).exists()


# --- the emulator is strict -------------------------------------------------------------------

MP4 = ("clip.mp4", b"not really a video")


@remote
@pytest.mark.parametrize(
    "method, path, kwargs, status, message",
    [
        ("POST", "file", {"files": {"video": MP4}, "key": ""}, 401, "Unauthorized"),
        ("GET", "status/x", {"key": "bad-key"}, 401, "Unauthorized"),
        ("GET", "file", {}, 405, "Method not allowed"),
        ("POST", "file", {"data": {"output_format": "mp3"}}, 400, "Send multipart/form-data"),
        ("POST", "file", {"files": {"audio": MP4}}, 400, "Missing required field: video"),
        ("POST", "file", {"files": {"video": ("a.wav", b"x")}}, 400, "Invalid input: .wav is"),
        ("POST", "file", {"files": {"video": MP4}}, 400, "Invalid input: the provided file is c"),
        ("POST", "file?persistent=yes", {"files": {"video": MP4}}, 400, "persistent must be"),
        (
            "POST",
            "file",
            {"files": {"video": MP4}, "data": {"output_format": "mp4"}},
            400,
            "output_format must be one of mp3, wav, aac, ogg, flac, wma, ac3, amr",
        ),
        (
            "POST",
            "file",
            {"files": {"video": MP4}, "data": {"start_time": "soon"}},
            400,
            "start_time must be a number of seconds",
        ),
        ("POST", "url", {"json": {"url": "http://example.com/a.mp4"}}, 400, "url must be an htt"),
        ("POST", "url", {"json": {"video": "https://x.example/a.mp4"}}, 400, "Missing required"),
        ("POST", "url", {"json": {"url": "https://127.0.0.1/a.mp4"}}, 400, "Invalid input: the v"),
        ("GET", "status/00000000-0000-0000-0000-000000000000", {}, 404, "Job not found"),
    ],
)
def test_the_emulator_answers_like_the_documented_api(
    sandbox, method, path, kwargs, status, message
):
    key = kwargs.pop("key", KEY)
    r = requests.request(
        method,
        f"{sandbox.url}{API}/{path}",
        headers={"apy-token": key} if key else {},
        timeout=10,
        **kwargs,
    )

    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == status and error["message"].startswith(message), error
    assert jobs_created(sandbox) == 0


@remote
def test_the_emulator_defaults_to_two_seconds_and_keeps_jobs_to_their_owner(sandbox, tmp_path):
    video = video_with_tone(tmp_path / "v.mp4", seconds=5)
    with video.open("rb") as fh:
        r = requests.post(
            f"{sandbox.url}{API}/file",
            headers={"apy-token": KEY},
            files={"video": ("v.mp4", fh)},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    remote_job = wait_until_done(sandbox, job_id)
    assert remote_job["status"] == "completed" and remote_job["duration"] == 2.0

    body = requests.get(
        f"{sandbox.url}{API}/status/{job_id}", headers={"apy-token": KEY}, timeout=10
    ).json()
    assert body["job_id"] == job_id and body["status"] == "completed"
    assert not same_origin(body["data"], sandbox.url)  # the "storage host"
    audio = tmp_path / "v.mp3"
    audio.write_bytes(requests.get(body["data"], timeout=10).content)
    assert engine.probe(audio).duration == pytest.approx(2, abs=0.1)
    other = requests.get(
        f"{sandbox.url}{API}/status/{job_id}", headers={"apy-token": "other"}, timeout=10
    )
    assert other.status_code == 404


# --- units: parameters, statuses, answers, multipart -----------------------------------------


def test_the_preset_knows_its_parameters():
    provider = get_provider(KIND)
    assert provider.validate_params({}) == {
        "start_time": 0.0,
        "output_format": "mp3",
        "persistent": False,
    }
    assert provider.validate_params(
        {"start_time": "1.5", "duration": 4, "output_format": "flac", "video": {"duration": 2}}
    ) == {"start_time": 1.5, "duration": 2.0, "output_format": "flac", "persistent": False}
    with pytest.raises(ValueError, match="output_format: opus not one of mp3"):
        provider.validate_params({"output_format": "opus"})
    with pytest.raises(ValueError, match="duration: must be more than zero"):
        provider.validate_params({"duration": 0})
    with pytest.raises(ValueError, match=r"start_time: -1\.0 is outside"):
        provider.validate_params({"start_time": -1})
    with pytest.raises(ValueError, match="Unknown parameters: bitrate"):
        provider.validate_params({"bitrate": 128})
    fields = {f.name: f for f in provider.credential_fields}
    assert fields["api_key"].secret and fields["api_key"].label == "apy-token"
    assert provider.auth_kinds == ("api_key",) and not provider.can_cancel


@pytest.mark.parametrize(
    "body, state, progress, stage",
    [
        ({"status": "pending"}, RUNNING, 10, "pending"),
        ({"status": "In-Progress"}, RUNNING, 50, "in-progress"),
        ({"data": {"status": "in_progress"}}, RUNNING, 50, "in-progress"),
        ({"status": "PROCESSING"}, RUNNING, 50, "in-progress"),
        ({"status": "Completed", "data": "https://x/a.mp3"}, SUCCESS, 100, "completed"),
        ({"state": "success"}, SUCCESS, 100, "completed"),
        ({"status": "done"}, SUCCESS, 100, "completed"),
        ({"status": "finished"}, SUCCESS, 100, "completed"),
        ({"status": "uploading-result"}, RUNNING, None, "uploading-result"),
        ({}, RUNNING, None, "processing"),
        ({"status": "FAILED", "error": {"code": 400, "message": "Bad codec"}}, FAILED, None, ""),
        ({"status": "error", "message": "Bad codec."}, FAILED, None, ""),
    ],
)
def test_it_maps_status_words(body, state, progress, stage):
    status = remote_status(body)
    assert (status.state, status.progress) == (state, progress)
    if state == FAILED:
        assert status.message == "ApyHub could not extract the audio: Bad codec."
    else:
        assert status.stage == stage


@pytest.mark.parametrize(
    "body, url",
    [
        ({"status": "completed", "data": "https://cdn.x/a.mp3"}, "https://cdn.x/a.mp3"),
        ({"data": {"url": "https://cdn.x/b.wav", "status": "done"}}, "https://cdn.x/b.wav"),
        ({"result": {"url": "https://cdn.x/c.ogg"}}, "https://cdn.x/c.ogg"),
        ({"output": "https://cdn.x/d.flac"}, "https://cdn.x/d.flac"),
        ({"download_url": "https://cdn.x/e.amr"}, "https://cdn.x/e.amr"),
        ({"data": {"files": [{"href": "https://cdn.x/f.ac3"}]}}, "https://cdn.x/f.ac3"),
        ({"status": "completed", "data": None}, ""),
    ],
)
def test_it_finds_the_result_link_anywhere(body, url):
    assert result_url(body) == url


def test_it_skips_a_status_that_echoes_our_input_link():
    body = {"url": "https://s3.x/in/clip.mp4?sig=1", "data": {"audio": "https://cdn.x/a.mp3"}}
    assert result_url(body, exclude_path="/in/clip.mp4") == "https://cdn.x/a.mp3"


def test_it_reads_the_job_id_in_both_shapes():
    assert job_id_of({"job_id": "3f0c"}) == "3f0c"
    assert job_id_of({"data": {"job_id": "3f0d"}}) == "3f0d"
    assert job_id_of({"data": "3f0e"}) == "" and job_id_of([]) == ""


def test_seconds_are_sent_as_short_strings():
    assert [seconds(v) for v in (0, 90, 2.5, 7.0416, 0.0004)] == ["0", "90", "2.5", "7.042", "0"]


def test_the_token_only_goes_to_the_api_origin():
    assert same_origin("https://api.apyhub.com/x", "https://api.apyhub.com/")
    assert not same_origin("https://storage.apyhub.com/x", "https://api.apyhub.com/")
    assert not same_origin("http://api.apyhub.com/x", "https://api.apyhub.com/")
