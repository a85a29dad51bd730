"""Dolby.io Media: the adapter against its emulator, over real HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.db import transaction
from django.utils import timezone

from media_jobs import connections, engine, samples, services, tasks, tracking
from media_jobs.models import Job, JobOutput, Preset, ProviderAccount
from media_jobs.providers import get_provider
from media_jobs.providers.context import JobContext
from media_jobs.providers.dolby import DolbyProvider
from tests.remote import drive

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

APP_KEY = "app-key-123"
APP_SECRET = "app-secret-Xyz=="  # base64-like, as real app secrets are


@pytest.fixture
def speech(tmp_path) -> Path:
    return samples.speech_like(tmp_path / "episode.wav", seconds=4, gain_db=-24)


@pytest.fixture
def account(acme, sandbox) -> ProviderAccount:
    return connections.account_create(
        workspace=acme,
        provider="dolby",
        credentials={"app_key": APP_KEY, "app_secret": APP_SECRET},
    )


def start_job(acme, path: Path, params: dict | None = None) -> Job:
    """Create a Dolby preset, an item and a job; the job's first run (submit) runs at commit."""
    preset = Preset.objects.create(
        workspace=acme,
        slug=f"dolby-{Preset.objects.count()}",
        name="Dolby",
        provider="dolby",
        params=params or {},
    )
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"), path=path, filename="episode.wav"
    )
    with transaction.atomic():
        job = services.job_create(item=item, preset=preset)
    return Job.objects.get(pk=job.pk)


def calls(sandbox, method: str | None = None, path: str = "") -> list[dict]:
    return sandbox.requests("dolby", method, path)


def token_calls(sandbox) -> list[dict]:
    return calls(sandbox, "POST", "/sandbox/dolby/v1/auth/token")


def name_of(job: Job) -> str:
    return job.remote_state["name"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def once_after(monkeypatch, method: str, action) -> None:
    """Run `action` once, right after DolbyProvider.<method> returns the first time."""
    original = getattr(DolbyProvider, method)
    fired = []

    def wrapped(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not fired:
            fired.append(True)
            action()
        return result

    monkeypatch.setattr(DolbyProvider, method, wrapped)


# --- a full job ---------------------------------------------------------------------------


def test_it_enhances_a_recording_end_to_end(acme, account, sandbox, speech):
    params = {
        "content_type": "podcast",
        "loudness_target": -16,
        "noise_reduction": "medium",
        "speech_isolation": 40,
        "output_format": "mp3",
    }
    job = drive(start_job(acme, speech, params))

    assert job.status == Job.Status.SUCCESS, job.error
    assert job.progress == 100
    assert job.statistics == {"operation": "enhance", "target": -16.0}
    output = job.outputs.get()
    assert (output.kind, output.format, output.filename) == ("media", "mp3", "episode.mp3")
    stored = Path(output.file.path)
    assert output.size == stored.stat().st_size
    assert output.checksum == sha256(stored)
    facts = engine.probe(stored)
    assert "mp3" in facts.format_name
    assert facts.duration == pytest.approx(4, abs=0.2)
    assert engine.measure(stored).integrated == pytest.approx(-16, abs=1)
    assert job.item.status == "published"

    # The exact calls: one token, upload, one job, polls, the result download.
    name = name_of(job)
    (grant,) = token_calls(sandbox)
    basic = base64.b64encode(f"{APP_KEY}:{APP_SECRET}".encode()).decode()
    assert grant["headers"]["Authorization"] == f"Basic {basic}"
    assert grant["form"] == {"grant_type": "client_credentials"}
    (declare,) = calls(sandbox, "POST", "/media/input")
    assert declare["json"] == {"url": f"dlb://in/{name}.wav"}
    (upload,) = calls(sandbox, "PUT", "/_storage/")
    assert "Authorization" not in upload["headers"]  # no bearer token to a presigned URL
    (submit,) = calls(sandbox, "POST", "/media/enhance")
    assert submit["content_type"] == "application/json"
    assert submit["json"] == {
        "input": f"dlb://in/{name}.wav",
        "output": f"dlb://out/{name}.mp3",
        "content": {"type": "podcast"},
        "audio": {
            "loudness": {"enable": True, "target_level": -16.0},
            "noise": {"reduction": {"enable": True, "amount": "medium"}},
            "speech": {"isolation": {"enable": True, "amount": 40}},
        },
        "callback": {"url": f"{sandbox.url}/hooks/dolby/{job.pk}/{job.webhook_token}"},
    }
    polls = calls(sandbox, "GET", "/media/enhance")
    assert polls and all(p["query"] == {"job_id": job.remote_id} for p in polls)
    (fetch,) = calls(sandbox, "GET", "/media/output")
    assert fetch["query"] == {"url": f"dlb://out/{name}.mp3"}
    account.refresh_from_db()
    bearer = f"Bearer {account.credentials['access_token']}"
    assert all(c["headers"]["Authorization"] == bearer for c in calls(sandbox, path="/media/"))


@pytest.mark.parametrize("operation", ["analyze", "analyze/speech"])
def test_it_collects_an_analysis_data_file_as_report_and_statistics(
    acme, account, sandbox, speech, operation
):
    job = drive(start_job(acme, speech, {"operation": operation}))

    assert job.status == Job.Status.SUCCESS, job.error
    name = name_of(job)
    (submit,) = calls(sandbox, "POST", f"/media/{operation}")
    assert submit["json"] == {
        "input": f"dlb://in/{name}.wav",
        "output": f"dlb://out/{name}.json",
        "callback": {"url": submit["json"]["callback"]["url"]},
    }
    assert f"/hooks/dolby/{job.pk}/{job.webhook_token}" in submit["json"]["callback"]["url"]
    report = job.outputs.get()
    assert (report.kind, report.format) == ("report", "json")
    assert report.filename == f"episode.dolby-{operation.replace('/', '-')}.json"
    data = json.loads(Path(report.file.path).read_text())
    assert {key: job.statistics[key] for key in data} == data
    assert job.statistics["operation"] == operation
    if operation == "analyze":
        measured = engine.measure(speech)
        assert job.statistics["output"] == {
            "integrated": pytest.approx(measured.integrated, abs=0.1),
            "lra": pytest.approx(measured.lra, abs=0.1),
            "true_peak": pytest.approx(measured.true_peak, abs=0.1),
        }
        assert data["processed_region"]["audio"]["loudness"]["range"] is not None
    else:
        assert data["processed_region"]["audio"]["speech"]["percentage"] == 100.0
        assert "output" not in job.statistics


def test_it_takes_a_diagnosis_from_the_status_answer(acme, account, sandbox, speech):
    job = drive(start_job(acme, speech, {"operation": "diagnose"}))

    assert job.status == Job.Status.SUCCESS, job.error
    (submit,) = calls(sandbox, "POST", "/media/diagnose")
    assert set(submit["json"]) == {"input", "callback"}
    assert not calls(sandbox, "GET", "/media/output")  # diagnose writes no file
    assert job.statistics["audio"]["clipping"] == {"num_sections": 0, "sections": []}
    assert job.statistics["output"]["integrated"] == pytest.approx(
        engine.measure(speech).integrated, abs=0.1
    )
    report = job.outputs.get()
    assert json.loads(Path(report.file.path).read_text())["media_info"]["audio"]["channels"] == 2


def test_it_transcodes_to_the_chosen_format(acme, account, sandbox, speech):
    job = drive(start_job(acme, speech, {"operation": "transcode", "output_format": "flac"}))

    assert job.status == Job.Status.SUCCESS, job.error
    name = name_of(job)
    (submit,) = calls(sandbox, "POST", "/media/transcode")
    assert submit["json"]["inputs"] == [{"source": f"dlb://in/{name}.wav"}]
    assert submit["json"]["outputs"] == [
        {"id": "main", "destination": f"dlb://out/{name}.flac", "kind": "flac"}
    ]
    output = job.outputs.get()
    assert (output.format, output.filename) == ("flac", "episode.flac")
    facts = engine.probe(output.file.path)
    assert facts.format_name == "flac"
    assert facts.duration == pytest.approx(4, abs=0.1)
    # A format change only: the level is untouched.
    assert engine.measure(output.file.path).integrated == pytest.approx(
        engine.measure(speech).integrated, abs=0.2
    )


def test_it_validates_preset_parameters():
    provider = get_provider("dolby")
    assert provider.validate_params({}) == {"operation": "enhance"}
    with pytest.raises(ValueError, match="only the enhance operation"):
        provider.validate_params({"operation": "analyze", "loudness_target": -16})
    with pytest.raises(ValueError, match="writes a JSON report"):
        provider.validate_params({"operation": "diagnose", "output_format": "mp3"})
    with pytest.raises(ValueError, match="noise_reduction"):
        provider.validate_params({"noise_reduction": "lots"})
    with pytest.raises(ValueError, match="speech_isolation"):
        provider.validate_params({"speech_isolation": 101})
    with pytest.raises(ValueError, match="Unknown parameters"):
        provider.validate_params({"target": -16})


# --- tokens -----------------------------------------------------------------------------


def test_it_fetches_one_token_and_reuses_it_for_submit_and_polls(acme, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True, unknown_status=2)  # a few extra polls
    job = drive(start_job(acme, speech))

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(calls(sandbox, "GET", "/media/enhance")) >= 3
    assert len(token_calls(sandbox)) == 1


def test_it_renews_a_token_near_its_expiry(acme, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True)
    job = start_job(acme, speech)
    assert job.remote_state.get("submitted")
    account.refresh_from_db()
    first = account.credentials["access_token"]
    # Within the renewal margin: the next call must not carry this token.
    ProviderAccount.objects.filter(pk=account.pk).update(
        token_expires_at=timezone.now() + timedelta(seconds=30)
    )

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(token_calls(sandbox)) == 2
    account.refresh_from_db()
    assert account.credentials["access_token"] != first
    assert account.token_expires_at > timezone.now() + timedelta(minutes=25)
    assert calls(sandbox, path="/media/")[-1]["headers"]["Authorization"] == (
        f"Bearer {account.credentials['access_token']}"
    )


def test_it_renews_a_cached_token_the_api_refuses_once(acme, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True)
    job = start_job(acme, speech)
    # The API forgets every token it issued (revoked early); the app itself is still fine.
    emu = sandbox.emulator("dolby")
    with emu.lock:
        emu.extra["tokens"].clear()
    polls_before = len(calls(sandbox, "GET", "/media/enhance"))

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(token_calls(sandbox)) == 2
    polls = calls(sandbox, "GET", "/media/enhance")[polls_before:]
    assert polls[0]["headers"]["Authorization"] != polls[1]["headers"]["Authorization"]
    account.refresh_from_db()
    assert not account.disabled


def test_refused_app_credentials_disable_the_account_after_one_call(acme, sandbox, speech):
    account = connections.account_create(
        workspace=acme,
        provider="dolby",
        credentials={"app_key": "bad-key", "app_secret": "whatever"},
    )
    job = drive(start_job(acme, speech))

    assert job.status == Job.Status.FAILED
    assert "reconnect the account" in job.error.lower()
    account.refresh_from_db()
    assert account.disabled
    assert "refused the token request (invalid_client" in account.last_error
    assert "whatever" not in account.last_error + job.error
    assert len(calls(sandbox)) == 1  # the token request, nothing else
    assert not calls(sandbox, path="/media/")


def test_a_revoked_app_fails_after_one_renewal(acme, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True)
    job = start_job(acme, speech)
    before = len(calls(sandbox))
    sandbox.control("dolby", expire_tokens=True)

    job = drive(job)

    assert job.status == Job.Status.FAILED
    assert "reconnect the account" in job.error.lower()
    account.refresh_from_db()
    assert account.disabled and account.last_error
    # The refused poll, then one token request (refused too): no loop.
    after = [(c["method"], c["path"]) for c in calls(sandbox)[before:]]
    assert after == [
        ("GET", "/sandbox/dolby/media/enhance"),
        ("POST", "/sandbox/dolby/v1/auth/token"),
    ]


# --- submitting exactly once ---------------------------------------------------------------


def test_running_the_job_task_twice_creates_one_remote_job(acme, account, sandbox, speech):
    job = start_job(acme, speech)  # the first run, at commit
    tasks.run_job(job.pk)
    tasks.run_job(job.pk)

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(calls(sandbox, "POST", "/media/enhance")) == 1
    assert len(calls(sandbox, "PUT", "/_storage/")) == 1
    assert len(sandbox.emulator("dolby").jobs) == 1


def test_a_crash_after_the_remote_job_exists_resumes_it(
    acme, account, sandbox, speech, monkeypatch
):
    original = JobContext.save_remote_id
    crashed = []

    def save_then_die(self, remote_id):
        original(self, remote_id)
        if not crashed:
            crashed.append(remote_id)
            raise RuntimeError("worker died")

    monkeypatch.setattr(JobContext, "save_remote_id", save_then_die)
    with pytest.raises(RuntimeError, match="worker died"):
        start_job(acme, speech)  # the first run, at commit (django-q's sync mode re-raises)
    job = Job.objects.get()
    assert job.remote_id == crashed[0]
    assert not job.remote_state.get("submitted")
    # The dead worker's lease lapses; the job is claimable again.
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert job.remote_id == crashed[0]
    assert len(calls(sandbox, "POST", "/media/enhance")) == 1
    assert len(sandbox.emulator("dolby").jobs) == 1


def test_a_failure_after_the_upload_resumes_without_uploading_again(
    acme, account, sandbox, speech, monkeypatch
):
    once_after(
        monkeypatch,
        "ensure_input",
        lambda: sandbox.control("dolby", fail_next=1, fail_status=503),
    )
    job = start_job(acme, speech)
    assert job.status == Job.Status.RUNNING and "503" in job.error
    assert job.remote_state["uploaded"] and not job.remote_id

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(calls(sandbox, "POST", "/media/input")) == 1
    assert len(calls(sandbox, "PUT", "/_storage/")) == 1
    assert len(calls(sandbox, "POST", "/media/enhance")) == 2  # the refused one, then one job
    assert len(sandbox.emulator("dolby").jobs) == 1


# --- failure modes ----------------------------------------------------------------------


def test_a_burst_of_503s_is_retried(acme, account, sandbox, speech):
    sandbox.control("dolby", fail_next=3, fail_status=503)
    job = drive(start_job(acme, speech))

    assert job.status == Job.Status.SUCCESS, job.error
    assert job.transient_errors == 0
    # The token request met all three failures, then everything went through once.
    assert len(token_calls(sandbox)) == 4
    assert len(calls(sandbox, "POST", "/media/enhance")) == 1


def test_a_429_delays_the_next_poll_by_retry_after(acme, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True)
    job = start_job(acme, speech)
    sandbox.control("dolby", fail_next=1, fail_status=429, retry_after=120)
    before = timezone.now()

    tracking.jobs_enqueue_due(now=timezone.now() + timedelta(hours=1))

    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert job.transient_errors == 1 and "429" in job.error
    assert job.next_poll_at >= before + timedelta(seconds=120)
    assert drive(job).status == Job.Status.SUCCESS


def test_a_rejected_request_fails_the_job_at_once(acme, account, sandbox, speech, monkeypatch):
    once_after(
        monkeypatch,
        "ensure_input",
        lambda: sandbox.control("dolby", fail_next=1, fail_status=400),
    )
    job = drive(start_job(acme, speech))

    assert job.status == Job.Status.FAILED
    assert job.error == "Dolby.io Media rejected the request (400: emulated failure)."
    assert len(calls(sandbox, "POST", "/media/enhance")) == 1
    account.refresh_from_db()
    assert not account.disabled


def test_a_job_dolby_fails_fails_with_its_message(acme, account, sandbox, speech):
    sandbox.control("dolby", fail_jobs="The input has no audible speech.")
    job = drive(start_job(acme, speech))

    assert job.status == Job.Status.FAILED
    assert job.error == (
        "Dolby.io Media failed the job: Processing failed: The input has no audible speech."
    )
    assert not JobOutput.objects.filter(job=job).exists()


def test_unknown_statuses_count_as_running(acme, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True, unknown_status=2)
    job = drive(start_job(acme, speech), until=lambda j: j.stage == "preparing")
    assert job.status == Job.Status.RUNNING

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error


def test_lost_callbacks_do_not_stop_polling(acme, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True, processing_delay=0.5)
    job = drive(start_job(acme, speech))

    assert job.status == Job.Status.SUCCESS, job.error
    assert job.poll_count >= 1


def test_a_stalled_job_times_out(acme, account, sandbox, speech):
    sandbox.control("dolby", stall=True)
    job = drive(start_job(acme, speech), until=lambda j: j.stage == "running")
    assert job.progress == 10
    # Nothing has moved for longer than max(10 min, 4 x 4 s + 5 min).
    Job.objects.filter(pk=job.pk).update(progress_at=timezone.now() - timedelta(minutes=11))

    job = drive(job)

    assert job.status == Job.Status.FAILED
    assert "made no progress" in job.error and "timed out" in job.error


def test_cancelling_a_job_cancels_it_at_dolby(acme, alice, account, sandbox, speech):
    sandbox.control("dolby", drop_webhooks=True, processing_delay=30)
    job = start_job(acme, speech)

    response = alice.api.post(f"/api/v1/jobs/{job.pk}/cancel")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    (cancel,) = calls(sandbox, "POST", "/media/jobs/cancel")
    assert cancel["query"] == {"job_id": job.remote_id}
    assert cancel["json"] == {}
    assert cancel["headers"]["Authorization"].startswith("Bearer ")
    assert sandbox.emulator("dolby").jobs[job.remote_id]["status"] == "Cancelled"


# --- credentials through the API -----------------------------------------------------------


def test_credentials_never_come_back_from_the_api(acme, alice, charlie, sandbox, speech):
    response = alice.api.post(
        "/api/v1/provider-accounts",
        {
            "workspace": "acme",
            "provider": "dolby",
            "credentials": {"app_key": APP_KEY, "app_secret": APP_SECRET},
            "test": True,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["identity"] == f"app {APP_KEY}"
    account = ProviderAccount.objects.get(pk=response.json()["id"])
    token = account.credentials["access_token"]
    (check,) = calls(sandbox, "GET", "/media/jobs")
    assert check["headers"]["Authorization"] == f"Bearer {token}"

    job = drive(start_job(acme, speech))
    assert job.status == Job.Status.SUCCESS, job.error
    answers = [
        response,
        alice.api.get("/api/v1/provider-accounts"),
        alice.api.get(f"/api/v1/provider-accounts/{account.pk}"),
        alice.api.get(f"/api/v1/jobs/{job.pk}"),
    ]
    for answer in answers:
        assert answer.status_code in (200, 201)
        body = answer.content.decode()
        assert APP_SECRET not in body and token not in body
        assert "app_secret" not in body and "access_token" not in body

    assert charlie.api.get(f"/api/v1/provider-accounts/{account.pk}").status_code == 404


def test_a_refused_app_key_creates_no_account(acme, alice, sandbox):
    response = alice.api.post(
        "/api/v1/provider-accounts",
        {
            "workspace": "acme",
            "provider": "dolby",
            "credentials": {"app_key": "bad-key", "app_secret": "s3cret"},
        },
        format="json",
    )

    assert response.status_code == 400
    assert "s3cret" not in response.content.decode()
    assert not ProviderAccount.objects.exists()
    assert len(calls(sandbox)) == 1


# --- callbacks ----------------------------------------------------------------------------


def test_the_callback_makes_the_job_poll_at_once(acme, account, sandbox, speech):
    # Long enough for the submit to hand the job back before Dolby calls.
    sandbox.control("dolby", processing_delay=2)
    job = start_job(acme, speech)
    assert job.next_poll_at > timezone.now()

    # No scheduler runs here: only the callback can bring the job to its end.
    deadline = time.monotonic() + 60
    while Job.objects.get(pk=job.pk).is_active and time.monotonic() < deadline:
        time.sleep(0.1)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESS, job.error

    hook = f"{sandbox.url}/hooks/dolby/{job.pk}"
    assert requests.post(f"{hook}/not-the-token", json={}, timeout=10).status_code == 404
    finished, outputs = job.finished_at, list(job.outputs.values_list("pk", "checksum"))
    polls = len(calls(sandbox, "GET", "/media/enhance"))
    for _ in range(2):  # duplicates
        answer = requests.post(f"{hook}/{job.webhook_token}", json={}, timeout=10)
        assert answer.status_code == 200
        assert answer.json() == {"ok": True, "queued": False}
    job.refresh_from_db()
    assert (job.status, job.finished_at) == (Job.Status.SUCCESS, finished)
    assert list(job.outputs.values_list("pk", "checksum")) == outputs
    assert len(calls(sandbox, "GET", "/media/enhance")) == polls


def test_an_expired_upload_link_is_asked_for_again(acme, account, sandbox, speech, monkeypatch):
    from media_jobs.sandbox import dolby as emulated

    monkeypatch.setattr(emulated, "LINK_SECONDS", -10)  # links are born expired
    job = start_job(acme, speech)
    assert job.status == Job.Status.RUNNING
    assert "expired link (403" in job.error
    assert "sig=" not in job.error and "?" not in job.error  # the signature stays out
    monkeypatch.setattr(emulated, "LINK_SECONDS", 3600)

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(calls(sandbox, "POST", "/media/input")) == 2
    assert len(calls(sandbox, "PUT", "/_storage/")) == 2
    assert len(calls(sandbox, "POST", "/media/enhance")) == 1


def test_the_emulator_holds_to_the_documented_contract(sandbox):
    base = f"{sandbox.url}/sandbox/dolby"
    token_url = f"{base}/v1/auth/token"
    auth = (APP_KEY, APP_SECRET)
    data = {"grant_type": "client_credentials"}

    refused = requests.post(token_url, auth=("bad-key", "x"), data=data, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    wrong_grant = {"grant_type": "password"}
    assert requests.post(token_url, auth=auth, data=wrong_grant, timeout=10).status_code == 400
    short = requests.post(token_url, auth=auth, data={**data, "expires_in": 60}, timeout=10)
    assert short.status_code == 200
    assert short.json()["token_type"] == "Bearer" and short.json()["expires_in"] == 60
    granted = requests.post(token_url, auth=auth, data=data, timeout=10).json()
    assert granted["expires_in"] == 1800
    headers = {"Authorization": f"Bearer {granted['access_token']}"}

    anonymous = requests.get(f"{base}/media/jobs", timeout=10)
    assert anonymous.status_code == 401
    assert set(anonymous.json()) == {"type", "status", "title", "detail"}
    assert requests.get(f"{base}/media/jobs", headers=headers, timeout=10).json() == {
        "count": 0,
        "jobs": [],
    }
    as_text = requests.post(f"{base}/media/enhance", data="{}", headers=headers, timeout=10)
    assert as_text.status_code == 415
    missing = requests.post(
        f"{base}/media/enhance",
        json={"input": "dlb://in/nothing.wav", "output": "dlb://out/x.wav"},
        headers=headers,
        timeout=10,
    )
    assert missing.status_code == 400
    assert missing.json()["type"] == "/problems/validation-error"
    assert "does not exist" in missing.json()["detail"]
    unknown = requests.get(f"{base}/media/enhance?job_id=nope", headers=headers, timeout=10)
    assert unknown.status_code == 404
    cancel = requests.post(f"{base}/media/jobs/cancel?job_id=nope", headers=headers, timeout=10)
    assert cancel.status_code == 415  # a JSON body {} is required
    absent = requests.get(
        f"{base}/media/output", params={"url": "dlb://out/x.wav"}, headers=headers, timeout=10
    )
    assert absent.status_code == 404
