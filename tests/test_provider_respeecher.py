"""Respeecher: the adapter against its emulator over real HTTP, and the pure readers."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
from django.db import transaction
from django.utils import timezone

from media_jobs import engine, services, tasks, tracking
from media_jobs.connections import account_create
from media_jobs.models import Job, MediaItem, Preset, ProviderAccount
from media_jobs.providers import get_provider
from media_jobs.providers.base import FAILED, RUNNING, SUCCESS, ProviderError
from media_jobs.providers.context import JobContext
from media_jobs.providers.http import ProviderClient
from media_jobs.providers.respeecher import (
    combined_status,
    conversion_status,
    detail_text,
    recording_label,
)
from media_jobs.samples import run, speech_like
from media_jobs.sandbox import respeecher as emulated
from media_jobs.sandbox.respeecher import AVA, BORIS, SAM
from tests.remote import drive

KIND = "respeecher"
KEY = "rs-live-1c9e5d7a3b"
API = "/sandbox/respeecher/api/"
UNKNOWN_VOICE = "0f0f0f0f-0000-4000-8000-000000000000"
remote = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def account(acme) -> ProviderAccount:
    return account_create(workspace=acme, provider=KIND, credentials={"api_key": KEY})


def make_preset(acme, slug: str = "voices", **params) -> Preset:
    params.setdefault("voices", [{"voice_id": SAM}])
    return Preset.objects.create(
        workspace=acme, slug=slug, name=slug.title(), provider=KIND, params=params
    )


@pytest.fixture
def preset(acme) -> Preset:
    return make_preset(acme)


def make_item(acme, alice, tmp_path: Path, name: str = "interview.wav", **kwargs) -> MediaItem:
    path = speech_like(tmp_path / name, seconds=kwargs.pop("seconds", 4))
    return services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"),
        path=path,
        filename=name,
        title=kwargs.pop("title", "Q3 interview"),
        user=alice.user,
    )


def tone_item(acme, alice, tmp_path: Path) -> MediaItem:
    """Return an item holding a 4 s, 440 Hz tone (a pitch anyone can measure)."""
    path = tmp_path / "tone.wav"
    run(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=4", str(path)])
    return services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"),
        path=path,
        filename="tone.wav",
        title="A4 tone",
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


def calls(sandbox, method: str, path: str) -> list[dict]:
    """Return the calls to exactly API + path (not the longer paths that start with it)."""
    return [c for c in sandbox.requests(KIND, method) if c["path"] == API + path]


def order_calls(sandbox) -> list[dict]:
    return calls(sandbox, "POST", "v2/orders")


def upload_calls(sandbox) -> list[dict]:
    return calls(sandbox, "POST", "recordings")


def orders_created(sandbox) -> int:
    return len(sandbox.emulator(KIND).jobs)


def dominant_frequency(path: Path) -> float:
    """Return the strongest frequency of a file (Hz), from an FFT of its mono mix."""
    args = ["-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]
    pcm = subprocess.run([engine.ffmpeg_binary(), *args], capture_output=True, check=True).stdout
    samples = np.frombuffer(pcm, dtype=np.float32)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * 16000 / len(samples))


# --- a whole job ------------------------------------------------------------------------------


@remote
def test_it_converts_an_original_into_one_file_per_voice(sandbox, acme, alice, account, tmp_path):
    preset = make_preset(
        acme, voices=[{"voice_id": SAM, "semitones_correction": 12}, {"voice_id": AVA}]
    )
    item = tone_item(acme, alice, tmp_path)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    # The exact conversation, in order: find-or-create project and folder, upload, order, poll.
    api = [
        (c["method"], c["path"].removeprefix(API))
        for c in sandbox.requests(KIND)
        if c["path"].startswith(API)
    ]
    state = job.remote_state
    first = state["conversions"][0]["conversion_id"]
    second = state["conversions"][1]["conversion_id"]
    assert api[:6] == [
        ("GET", "projects"),
        ("POST", "projects"),
        ("GET", "folders"),
        ("POST", "folders"),
        ("POST", "recordings"),
        ("POST", "v2/orders"),
    ]
    assert set(api[6:]) == {("GET", f"recordings/{first}"), ("GET", f"recordings/{second}")}
    assert all(c["headers"]["Api-Key"] == KEY for c in sandbox.requests(KIND) if API in c["path"])
    get_projects, post_project, get_folders, post_folder, upload, order = sandbox.requests(KIND)[:6]
    assert get_projects["query"] == {
        "limit": "100",
        "offset": "0",
        "direction": "asc",
        "sort": "created_at",
    }
    assert post_project["json"] == {"name": "Media hub"}
    assert get_folders["query"]["project_id"] == state["project_id"]
    assert post_folder["json"] == {"name": "acme", "project_id": state["project_id"]}
    assert upload["content_type"] == "multipart/form-data"
    assert upload["form"] == {
        "parent_folder_id": state["folder_id"],
        "microphone": "file",
        "label": "A4 tone",
    }
    assert upload["files"] == {"data": "tone.wav"}
    assert order["json"] == {
        "original_id": state["original_id"],
        "conversions": [{"voice_id": SAM, "semitones_correction": 12}, {"voice_id": AVA}],
    }
    emu_orders = sandbox.emulator(KIND).jobs
    assert job.remote_id == state["conversions"][0]["order_id"] and job.remote_id in emu_orders
    assert [c["voice_id"] for c in state["conversions"]] == [SAM, AVA]

    # Results come from auth-free signed links: our key never goes to the storage host.
    downloads = [
        c for c in sandbox.requests(KIND, "GET") if "/sandbox/respeecher/files/" in c["path"]
    ]
    assert len(downloads) == 2 and all("Api-Key" not in c["headers"] for c in downloads)
    assert all(set(c["query"]) == {"expires", "signature"} for c in downloads)

    outputs = {o.filename: o for o in job.outputs.all()}
    assert set(outputs) == {"tone.sam+12st.wav", "tone.ava.wav"}
    expected_pitch = {"tone.sam+12st.wav": 880.0, "tone.ava.wav": 440 * 2 ** (5 / 12)}
    for name, output in outputs.items():
        assert output.format == "wav" and output.kind == "media"
        local = tmp_path / name
        with output.file.open("rb") as fh:
            local.write_bytes(fh.read())
        assert output.size == local.stat().st_size
        facts = engine.probe(local)
        assert facts.format_name == "wav" and facts.duration == pytest.approx(4.0, abs=0.1)
        # Sam keeps the pitch, so +12 semitones is an octave up: 880 Hz; Ava shifts +5 herself.
        assert dominant_frequency(local) == pytest.approx(expected_pitch[name], rel=0.02)
        loudness = engine.measure(local)
        # The emulated conversion normalises to -16 LUFS; the statistics are what we measured.
        assert loudness.integrated == pytest.approx(-16, abs=0.5)
        assert output.statistics["integrated"] == pytest.approx(loudness.integrated, abs=0.05)
        assert output.statistics["true_peak"] <= -1.0
    assert outputs["tone.sam+12st.wav"].statistics["voice"] == "Sam"
    assert outputs["tone.sam+12st.wav"].statistics["semitones_correction"] == 12
    assert outputs["tone.ava.wav"].statistics["voice_id"] == AVA

    stats = job.statistics
    assert stats["input"]["duration"] == pytest.approx(4.0, abs=0.05)
    assert stats["input"]["integrated"] < -16
    assert stats["output"]["integrated"] == pytest.approx(-16, abs=0.5)
    assert [v["voice"] for v in stats["voices"]] == ["Sam", "Ava"]
    item.refresh_from_db()
    assert item.status == MediaItem.Status.PUBLISHED


@remote
def test_it_reuses_the_project_and_folder_for_the_next_job(
    sandbox, acme, alice, account, preset, tmp_path
):
    first = drive(start(make_item(acme, alice, tmp_path, "one.wav"), preset))
    detailed = make_preset(
        acme,
        "detailed",
        voices=[
            {
                "voice_id": SAM,
                "accent_id": "a1000000-0000-4000-8000-000000000002",
                "narration_style_id": "b1000000-0000-4000-8000-000000000001",
                "semitones_correction": -3,
            }
        ],
        calibration_id="c0000000-0000-4000-8000-00000000000a",
        use_calibration=True,
    )
    second = drive(start(make_item(acme, alice, tmp_path, "two.wav"), detailed))

    assert first.status == second.status == Job.Status.SUCCESS, (first.error, second.error)
    assert len(calls(sandbox, "POST", "projects")) == 1
    assert len(calls(sandbox, "POST", "folders")) == 1
    for key in ("project_id", "folder_id"):
        assert first.remote_state[key] == second.remote_state[key]
    # The second job found them through the documented lists, then only uploaded and ordered.
    assert len(calls(sandbox, "GET", "projects")) == 2
    assert len(calls(sandbox, "GET", "folders")) == 2
    assert order_calls(sandbox)[-1]["json"] == {
        "original_id": second.remote_state["original_id"],
        "conversions": [
            {
                "voice_id": SAM,
                "accent_id": "a1000000-0000-4000-8000-000000000002",
                "narration_style_id": "b1000000-0000-4000-8000-000000000001",
                "semitones_correction": -3,
            }
        ],
        "calibration_id": "c0000000-0000-4000-8000-00000000000a",
        "use_calibration": True,
    }
    assert [o.filename for o in second.outputs.all()] == ["two.sam-3st.wav"]

    # Another folder name: a new folder in the same project.
    other = make_preset(acme, "season", folder_name="Season 2")
    third = drive(start(make_item(acme, alice, tmp_path, "three.wav"), other))
    assert third.status == Job.Status.SUCCESS, third.error
    assert len(calls(sandbox, "POST", "projects")) == 1
    assert calls(sandbox, "POST", "folders")[-1]["json"] == {
        "name": "Season 2",
        "project_id": first.remote_state["project_id"],
    }
    assert third.remote_state["folder_id"] != first.remote_state["folder_id"]


@remote
def test_it_sanitises_the_label_it_sends(sandbox, acme, alice, account, preset, tmp_path):
    title = "Épisode #12: Q&A — with Zoë & friends (final mix, v2)!!"
    item = make_item(acme, alice, tmp_path, title=title)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [upload] = upload_calls(sandbox)
    assert upload["form"]["label"] == "Episode 12 Q A with Zoe friends final mi"
    assert job.remote_state["label"] == upload["form"]["label"]


@remote
def test_it_uploads_other_formats_as_flac(sandbox, acme, alice, account, preset, tmp_path):
    item = make_item(acme, alice, tmp_path, "talk.m4a")

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    [upload] = upload_calls(sandbox)
    assert upload["files"] == {"data": "talk.flac"}
    original = sandbox.emulator(KIND).extra["recordings"][job.remote_state["original_id"]]
    assert original["duration"] == pytest.approx(4.0, abs=0.1)
    assert [o.filename for o in job.outputs.all()] == ["talk.sam.wav"]


# --- exactly one order ------------------------------------------------------------------------


@remote
def test_it_orders_once_when_the_task_runs_twice(sandbox, account, preset, item):
    job = start(item, preset, start=False)
    Job.objects.filter(pk=job.pk).update(stage="queued")  # queued, as a broker would deliver it

    tasks.run_job(job.pk)
    tasks.run_job(job.pk)

    assert len(order_calls(sandbox)) == 1 and len(upload_calls(sandbox)) == 1
    assert drive(job).status == Job.Status.SUCCESS
    assert len(order_calls(sandbox)) == 1 and orders_created(sandbox) == 1


@remote
def test_a_refused_order_call_is_retried_without_a_second_upload(
    sandbox, account, preset, item, monkeypatch
):
    original = ProviderClient.json
    refused = []

    def refuse_first_order(self, method, path, **kwargs):
        if path == "api/v2/orders" and not refused:
            refused.append(True)
            sandbox.control(KIND, fail_next=1, fail_status=503)
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(ProviderClient, "json", refuse_first_order)
    job = start(item, preset)

    assert job.status == Job.Status.RUNNING and not job.remote_id and "503" in job.error
    assert job.remote_state["original_id"] and job.remote_state["ordering"]
    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(upload_calls(sandbox)) == 1
    # The retry looked for an order that went through before ordering again.
    assert len(calls(sandbox, "GET", "recordings/conversions")) == 1
    assert len(order_calls(sandbox)) == 2 and orders_created(sandbox) == 1


@remote
def test_a_lost_order_answer_adopts_the_order_instead_of_paying_twice(
    sandbox, acme, account, item, monkeypatch
):
    preset = make_preset(acme, voices=[{"voice_id": SAM}, {"voice_id": BORIS}])
    original = ProviderClient.json
    lost = []

    def lose_first_answer(self, method, path, **kwargs):
        answer = original(self, method, path, **kwargs)
        if path == "api/v2/orders" and not lost:
            lost.append(answer)
            raise ProviderError("Respeecher timed out (POST api/v2/orders).")
        return answer

    monkeypatch.setattr(ProviderClient, "json", lose_first_answer)
    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(order_calls(sandbox)) == 1 and orders_created(sandbox) == 2
    ordered = [o["conversion_id"] for o in lost[0]]
    assert [c["conversion_id"] for c in job.remote_state["conversions"]] == ordered
    assert [c["voice_id"] for c in job.remote_state["conversions"]] == [SAM, BORIS]
    assert job.remote_id == ordered[0]
    assert sorted(o.filename for o in job.outputs.all()) == [
        "interview.boris.wav",
        "interview.sam.wav",
    ]


@remote
def test_it_resumes_the_same_order_after_a_crash_past_save_remote_id(
    sandbox, account, preset, item, monkeypatch
):
    original = JobContext.save_state
    crashed = []

    def crash_once(self, **updates):
        if "conversions" in updates and not crashed:
            crashed.append(True)
            raise RuntimeError("worker died")
        return original(self, **updates)

    monkeypatch.setattr(JobContext, "save_state", crash_once)
    with pytest.raises(RuntimeError, match="worker died"):
        start(item, preset)  # the worker dies right after the order id was saved
    job = Job.objects.get(item=item)
    assert crashed and job.remote_id in sandbox.emulator(KIND).jobs
    assert not job.remote_state.get("conversions") and not job.remote_state.get("submitted")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks.reconcile_jobs()["resumed"] == [job.pk]

    job = drive(job)

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(order_calls(sandbox)) == 1 and len(upload_calls(sandbox)) == 1
    [conversion] = job.remote_state["conversions"]
    assert conversion["voice_id"] == SAM
    assert (
        conversion["conversion_id"]
        == next(iter(sandbox.emulator(KIND).jobs.values()))["conversion_id"]
    )


# --- failures ---------------------------------------------------------------------------------


@remote
def test_it_retries_a_burst_of_503s(sandbox, account, preset, item):
    sandbox.control(KIND, fail_next=3, fail_status=503)

    job = drive(start(item, preset))

    assert job.status == Job.Status.SUCCESS, job.error
    assert len(calls(sandbox, "GET", "projects")) == 4
    assert len(calls(sandbox, "POST", "projects")) == 1
    assert len(order_calls(sandbox)) == 1 and orders_created(sandbox) == 1


@remote
def test_it_waits_for_retry_after_on_429(sandbox, account, preset, item):
    sandbox.control(KIND, fail_next=1, fail_status=429, retry_after=120)
    before = timezone.now()

    job = start(item, preset)

    assert job.status == Job.Status.RUNNING and not job.remote_id
    assert job.next_poll_at >= before + timedelta(seconds=120)
    assert "429" in job.error and job.transient_errors == 1
    assert drive(job).status == Job.Status.SUCCESS
    assert orders_created(sandbox) == 1


@remote
def test_it_disables_the_account_when_the_key_is_refused(sandbox, acme, preset, item):
    account = account_create(workspace=acme, provider=KIND, credentials={"api_key": "bad-key"})

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert "reconnect the account" in job.error
    account.refresh_from_db()
    assert account.disabled and "Invalid API key" in account.last_error
    assert len(sandbox.requests(KIND)) == 1
    assert "bad-key" not in job.error + account.last_error


@remote
def test_it_disables_the_account_when_the_key_expires_mid_job(sandbox, account, preset, item):
    sandbox.control(KIND, processing_delay=2.0)
    job = start(item, preset)
    assert job.remote_id
    sandbox.control(KIND, expire_tokens=True)
    before = len(sandbox.requests(KIND))

    job = drive(job)

    assert job.status == Job.Status.FAILED and "reconnect the account" in job.error
    account.refresh_from_db()
    assert account.disabled
    assert len(sandbox.requests(KIND)) == before + 1


@remote
def test_a_422_fails_the_job_with_respeechers_message(sandbox, acme, account, item):
    preset = make_preset(acme, voices=[{"voice_id": SAM}, {"voice_id": UNKNOWN_VOICE}])

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert job.error == (
        "Respeecher rejected the request (422: conversions.1.voice_id: Voice not found)."
    )
    assert len(order_calls(sandbox)) == 1 and orders_created(sandbox) == 0
    account.refresh_from_db()
    assert not account.disabled


@remote
def test_a_402_says_the_account_needs_credits(sandbox, account, preset, item):
    sandbox.emulator(KIND).extra["credits"] = 1

    job = start(item, preset)

    assert job.status == Job.Status.FAILED
    assert job.error.startswith("Respeecher needs payment: the account is out of credits")
    assert "(402: Not enough credits to convert this recording)" in job.error
    assert len(order_calls(sandbox)) == 1 and orders_created(sandbox) == 0
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
def test_it_fails_with_respeechers_message(sandbox, account, preset, item):
    sandbox.control(KIND, fail_jobs="GPU pool out of memory")

    job = drive(start(item, preset))

    assert job.status == Job.Status.FAILED
    assert job.error == "Respeecher could not convert the voice (Sam: GPU pool out of memory)."
    assert not job.outputs.exists()
    order = next(iter(sandbox.emulator(KIND).jobs.values()))
    assert order["state"] == "error"


@remote
def test_it_times_out_a_stalled_conversion(sandbox, account, preset, item):
    sandbox.control(KIND, stall=True)
    job = drive(start(item, preset), until=lambda j: j.stage == "new")
    limit = tracking.stall_limit(job)
    assert limit == timedelta(minutes=10)  # max(10 min, 4 x 4 s + 5 min)

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
    assert get_provider(KIND).can_cancel is False  # no cancel endpoint in the contract
    before = len(sandbox.requests(KIND))

    with transaction.atomic():
        assert services.job_cancel(job=job)
    tracking.jobs_enqueue_due(now=timezone.now() + timedelta(hours=1))

    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert len(sandbox.requests(KIND)) == before


# --- accounts and secrets ---------------------------------------------------------------------


@remote
def test_the_api_key_never_comes_back(sandbox, alice, charlie, acme, preset, item):
    secret = "rs-live-9d8c7b6a5f4e3d2c1b0a"
    r = alice.api.post(
        "/api/v1/provider-accounts",
        {"provider": KIND, "credentials": {"api_key": secret}, "test": True},
        format="json",
    )
    assert r.status_code == 201, r.content
    account_id = r.json()["id"]
    assert r.json()["identity"] == "Respeecher API key (4 voices)"
    [check] = sandbox.requests(KIND)
    assert (check["method"], check["path"], check["query"]) == (
        "GET",
        API + "v2/voices",
        {"limit": "1"},
    )
    assert check["headers"]["Api-Key"] == secret

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
    assert secret not in str(job.remote_state) + job.error
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


def api(sandbox, method: str, path: str, key: str | None = KEY, **kwargs) -> requests.Response:
    headers = {"api-key": key} if key else {}
    return requests.request(
        method, f"{sandbox.url}{API}{path}", headers=headers, timeout=30, **kwargs
    )


def folder_for(sandbox, key: str = KEY) -> str:
    project = api(sandbox, "POST", "projects", key, json={"name": "P"}).json()
    folder = api(sandbox, "POST", "folders", key, json={"name": "F", "project_id": project["id"]})
    return folder.json()["id"]


def upload(sandbox, folder_id: str, audio: Path, key: str = KEY, **form) -> requests.Response:
    fields = {"parent_folder_id": folder_id, "microphone": "file", "label": "Take 1", **form}
    with audio.open("rb") as fh:
        return api(
            sandbox, "POST", "recordings", key, data=fields, files={"data": (audio.name, fh)}
        )


@remote
def test_the_emulator_wants_the_api_key(sandbox):
    assert api(sandbox, "GET", "v2/voices", key=None).json() == {"detail": "Not authenticated"}
    assert api(sandbox, "GET", "v2/voices", key=None).status_code == 401
    assert api(sandbox, "GET", "projects", key="bad-key").status_code == 401
    r = requests.get(
        f"{sandbox.url}{API}v2/voices", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert r.status_code == 401
    assert api(sandbox, "GET", "v2/voices").status_code == 200


@remote
def test_the_emulator_validates_uploads_like_fastapi(sandbox, tmp_path):
    folder = folder_for(sandbox)
    audio = speech_like(tmp_path / "take.wav", seconds=1)

    r = api(sandbox, "POST", "recordings", data={"label": "x"}, files={"other": b"1"})
    assert r.status_code == 422
    assert {tuple(e["loc"]) for e in r.json()["detail"]} == {
        ("body", "data"),
        ("body", "parent_folder_id"),
        ("body", "microphone"),
    }
    assert all(e["msg"] == "field required" for e in r.json()["detail"])
    long = upload(sandbox, folder, audio, label="x" * 41)
    assert long.status_code == 422 and long.json()["detail"][0]["loc"] == ["body", "label"]
    odd = upload(sandbox, folder, audio, label="Q&A: take #1")
    assert odd.status_code == 422 and "regex" in odd.json()["detail"][0]["msg"]
    assert upload(sandbox, folder, audio, parent_folder_id="nope").status_code == 422
    missing = upload(sandbox, "0f0f0f0f-0000-4000-8000-000000000001", audio)
    assert missing.status_code == 404 and missing.json() == {"detail": "Folder not found"}
    opus = speech_like(tmp_path / "take.opus", seconds=1)
    assert upload(sandbox, folder, opus).status_code == 400

    ok = upload(sandbox, folder, audio)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["type"] == "original" and body["state"] == "done" and body["label"] == "Take 1"
    assert body["parent_folder_id"] == folder and body["duration"] == pytest.approx(1, abs=0.05)
    # Someone else's key sees nothing of it.
    assert api(sandbox, "GET", f"recordings/{body['id']}", key="other").status_code == 404
    assert upload(sandbox, folder, audio, key="other").status_code == 404
    assert api(sandbox, "GET", "recordings/not-a-uuid").status_code == 422
    assert api(sandbox, "GET", "folders").status_code == 422  # project_id is required


@remote
@pytest.mark.parametrize(
    "conversions, loc, msg",
    [
        ([], ["body", "conversions"], "ensure this value has at least 1 items"),
        ([{"voice_id": UNKNOWN_VOICE}], ["body", "conversions", 0, "voice_id"], "Voice not found"),
        (
            [{"voice_id": "ava"}],
            ["body", "conversions", 0, "voice_id"],
            "value is not a valid uuid",
        ),
        ([{"accent_id": None}], ["body", "conversions", 0, "voice_id"], "field required"),
        (
            [{"voice_id": SAM, "semitones_correction": 13}],
            ["body", "conversions", 0, "semitones_correction"],
            "ensure this value is less than or equal to 12",
        ),
        (
            [{"voice_id": AVA, "accent_id": "a1000000-0000-4000-8000-000000000001"}],
            ["body", "conversions", 0, "accent_id"],
            "Accent is not available for this voice",
        ),
    ],
)
def test_the_emulator_validates_orders_like_fastapi(sandbox, tmp_path, conversions, loc, msg):
    folder = folder_for(sandbox)
    original = upload(sandbox, folder, speech_like(tmp_path / "take.wav", seconds=1)).json()

    r = api(
        sandbox,
        "POST",
        "v2/orders",
        json={"original_id": original["id"], "conversions": conversions},
    )

    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc and r.json()["detail"][0]["msg"] == msg
    assert orders_created(sandbox) == 0


@remote
def test_the_emulator_converts_retries_and_signs_links(sandbox, tmp_path):
    folder = folder_for(sandbox)
    original = upload(sandbox, folder, speech_like(tmp_path / "take.wav", seconds=1)).json()
    sandbox.control(KIND, fail_jobs="Model crashed")

    [order] = api(
        sandbox,
        "POST",
        "v2/orders",
        json={"original_id": original["id"], "conversions": [{"voice_id": BORIS}]},
    ).json()
    assert order["state"] == "new" and order["original_id"] == original["id"]
    emu = sandbox.emulator(KIND)
    conversion = f"recordings/{order['conversion_id']}"
    deadline = timezone.now() + timedelta(seconds=30)
    while api(sandbox, "GET", conversion).json()["state"] != "error":
        assert timezone.now() < deadline
        time.sleep(0.05)  # pacing only: the loop ends on the state, not on time

    sandbox.control(KIND, fail_jobs="")
    retried = api(sandbox, "POST", f"v2/orders/retry/{order['conversion_id']}")
    assert retried.status_code == 200 and retried.json()[0]["id"] == order["id"]
    while (body := api(sandbox, "GET", conversion).json())["state"] != "done":
        assert timezone.now() < deadline
        time.sleep(0.05)
    assert body["type"] == "conversion" and body["model_name"] == "Boris"
    assert body["original_id"] == original["id"] and body["process_stage"] == "done"
    assert emu.jobs[order["id"]]["state"] == "done"
    listed = api(sandbox, "GET", "recordings/conversions", params={"original_id": original["id"]})
    assert [c["id"] for c in listed.json()["list"]] == [order["conversion_id"]]
    assert api(sandbox, "POST", f"v2/orders/retry/{order['conversion_id']}").status_code == 400

    link = requests.get(body["url"], timeout=10)  # no key: the link carries its own signature
    assert link.status_code == 200 and link.content[:4] == b"RIFF"
    assert (
        requests.get(body["url"].replace("signature=", "signature=0"), timeout=10).status_code
        == 403
    )


# --- units: parameters, statuses, errors, labels ----------------------------------------------


def test_the_preset_needs_voices_and_checks_them():
    provider = get_provider(KIND)
    with pytest.raises(ValueError, match="voices: required"):
        provider.validate_params({})
    with pytest.raises(ValueError, match="voices: give at least one voice"):
        provider.validate_params({"voices": []})
    with pytest.raises(ValueError, match=r"voices\[0\].voice_id: 'ava' is not a Respeecher id"):
        provider.validate_params({"voices": [{"voice_id": "ava"}]})
    with pytest.raises(ValueError, match=r"voices\[0\].semitones_correction: 13 is outside"):
        provider.validate_params({"voices": [{"voice_id": SAM, "semitones_correction": 13}]})
    with pytest.raises(ValueError, match=r"voices\[0\].semitones_correction: expected a whole"):
        provider.validate_params({"voices": [{"voice_id": SAM, "semitones_correction": 1.5}]})
    with pytest.raises(ValueError, match=r"voices\[0\]: unknown keys pitch"):
        provider.validate_params({"voices": [{"voice_id": SAM, "pitch": 2}]})
    with pytest.raises(ValueError, match="use_calibration: needs a calibration_id"):
        provider.validate_params({"voices": [SAM], "use_calibration": True})
    with pytest.raises(ValueError, match="Unknown parameters: speed"):
        provider.validate_params({"voices": [SAM], "speed": 2})
    assert provider.validate_params(
        {"voices": [SAM.upper(), {"voice_id": AVA, "semitones_correction": "-2"}]}
    ) == {
        "voices": [{"voice_id": SAM}, {"voice_id": AVA, "semitones_correction": -2}],
        "project_name": "Media hub",
    }


@pytest.mark.parametrize(
    "recording, state, progress, stage",
    [
        ({"state": "processing", "process_stage": "new"}, RUNNING, 10, "new"),
        ({"state": "processing", "process_stage": "pre_processing"}, RUNNING, 25, "pre_processing"),
        ({"state": "processing", "process_stage": "processing"}, RUNNING, 50, "processing"),
        (
            {"state": "processing", "process_stage": "post_processing"},
            RUNNING,
            80,
            "post_processing",
        ),
        ({"state": "processing"}, RUNNING, None, "processing"),
        ({"state": "Queued_For_GPU"}, RUNNING, None, "queued_for_gpu"),
        (
            {"state": "done", "process_stage": "done", "url": "https://x/y.wav"},
            SUCCESS,
            100,
            "done",
        ),
        ({"state": "done"}, RUNNING, 80, "post_processing"),  # done, but no link yet
        ({"state": "error", "error": "Bad audio"}, FAILED, None, "error"),
        ({"state": "processing", "process_stage": "error"}, FAILED, None, "error"),
        ({}, RUNNING, None, "processing"),
    ],
)
def test_it_maps_conversion_states(recording, state, progress, stage):
    status = conversion_status(recording)
    assert (status.state, status.progress, status.stage) == (state, progress, stage)


def test_it_combines_the_conversions_of_a_job():
    done = {"state": "done", "url": "https://x/a.wav", "model_name": "Sam"}
    assert combined_status([done, done]).state == SUCCESS
    running = combined_status([done, {"state": "processing", "process_stage": "pre_processing"}])
    assert (running.state, running.progress, running.stage) == (RUNNING, 62, "pre_processing")
    unknown = combined_status([done, {"state": "warming_up"}])
    assert (unknown.state, unknown.progress, unknown.stage) == (RUNNING, None, "warming_up")
    failed = combined_status([done, {"state": "error", "error": "Too short", "model_name": "Ava"}])
    assert failed.state == FAILED
    assert failed.message == "Respeecher could not convert the voice (Ava: Too short)."


def answer(status: int, body) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.request = requests.Request(
        "POST", "https://gateway.respeecher.com/api/v2/orders"
    ).prepare()
    return response


@pytest.mark.parametrize(
    "status, body, permanent, auth, text",
    [
        (401, {"detail": "Not authenticated"}, True, True, "refused the API key (401: Not auth"),
        (403, {"detail": "Not authenticated"}, True, True, "refused the API key (403: Not auth"),
        (403, {"detail": "Voice is not in your plan"}, True, False, "does not allow this request"),
        (402, {"detail": "Payment required"}, True, False, "needs payment"),
        (
            422,
            {"detail": [{"loc": ["body", "label"], "msg": "too long", "type": "x"}]},
            True,
            False,
            "rejected the request (422: label: too long)",
        ),
        (404, {"detail": "Folder not found"}, True, False, "could not find it (404: Folder not"),
        (400, {"detail": "Unsupported audio format"}, True, False, "(400: Unsupported audio"),
        (503, {"detail": "busy"}, False, False, "unavailable (503: busy)"),
        (429, b"slow down", False, False, "unavailable (429: slow down)"),
    ],
)
def test_it_classifies_respeechers_answers(status, body, permanent, auth, text):
    provider = get_provider(KIND)
    response = answer(status, body)
    client = ProviderClient(provider, base_url="https://gateway.respeecher.com/")

    error = client.provider_error(response)

    assert (error.permanent, error.auth) == (permanent, auth)
    assert text in error.message


def test_it_reads_fastapis_422_list():
    body = {
        "detail": [
            {"loc": ["body", "conversions", 0, "voice_id"], "msg": "Voice not found", "type": "x"},
            {"loc": ["query", "limit"], "msg": "not an integer", "type": "y"},
        ]
    }
    assert detail_text(answer(422, body)) == (
        "conversions.0.voice_id: Voice not found; limit: not an integer"
    )


@pytest.mark.parametrize(
    "text, label",
    [
        ("Q3 interview", "Q3 interview"),
        ("Café — naïve résumé", "Cafe naive resume"),
        ("a" * 60, "a" * 40),
        ("Part one - the very long introduction of it", "Part one - the very long introduction of"),
        ("Thirty-nine letters and then a hyphen x - y", "Thirty-nine letters and then a hyphen x"),
        ("   ---  ", "Media hub job 7"),
        ("日本語のタイトル", "Media hub job 7"),
        (None, "Media hub job 7"),
    ],
)
def test_it_makes_labels_respeecher_accepts(text, label):
    made = recording_label(text, 7)
    assert made == label
    assert len(made) <= 40 and emulated.LABEL_RE.match(made)
