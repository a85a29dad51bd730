"""Jobs end to end on the built-in engine: Simple API, lifecycle, idempotency, cancel, reconcile."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from media_jobs import samples, services, tasks
from media_jobs.models import Job, JobOutput, MediaItem, Preset
from tests.media import ebur128

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(scope="session")
def quiet_wav(tmp_path_factory) -> Path:
    """Speech-like stereo WAV far below podcast loudness."""
    return samples.speech_like(
        tmp_path_factory.mktemp("jobs") / "episode.wav", seconds=12, gain_db=-24
    )


@pytest.fixture(scope="session")
def clip_mp4(tmp_path_factory) -> Path:
    return samples.video_with_tone(tmp_path_factory.mktemp("jobs") / "clip.mp4", seconds=6)


def simple_job(person, path: Path, **fields):
    with path.open("rb") as fh:
        return person.api.post(
            "/api/v1/simple/jobs", {"input_file": fh, **fields}, format="multipart"
        )


def download(person, url: str, dest: Path) -> Path:
    r = person.api.get(url)
    assert r.status_code == 200, r.status_code
    dest.write_bytes(b"".join(r.streaming_content))
    return dest


def test_simple_job_takes_a_wav_to_a_normalised_mp3(
    bob, charlie, quiet_wav, run_tasks_inline, tmp_path
):
    r = simple_job(bob, quiet_wav, preset="podcast", title="Episode 1")
    assert r.status_code == 201, r.content
    created = r.json()
    job = bob.api.get(f"/api/v1/jobs/{created['id']}").json()
    assert set(job) >= {
        "id", "status", "progress", "stage", "error", "item", "preset", "created_at",
        "started_at", "finished_at", "statistics", "outputs",
    }  # fmt: skip
    assert job["status"] == "success", job["error"]
    assert job["progress"] == 100 and job["preset"] == "podcast"
    assert job["started_at"] and job["finished_at"] >= job["started_at"]
    (out,) = job["outputs"]
    assert out["format"] == "mp3" and out["filename"].endswith(".mp3")
    mp3 = download(bob, out["download_url"], tmp_path / "out.mp3")
    assert mp3.stat().st_size == out["size"]
    measured = ebur128(mp3)
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)
    assert measured["true_peak"] <= -1.0
    assert job["statistics"]["output"]["integrated"] == pytest.approx(
        measured["integrated"], abs=0.2
    )
    # charlie's key can't see it, nor fetch its file
    assert charlie.api.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert charlie.api.get(out["download_url"]).status_code == 404
    item = MediaItem.objects.get(pk=job["item"])
    assert item.status == "published" and item.title == "Episode 1"
    assert item.dataset.name == "inbox"


def test_simple_job_applies_auphonic_named_overrides(bob, quiet_wav, run_tasks_inline, tmp_path):
    r = simple_job(bob, quiet_wav, preset="podcast", loudnesstarget="-20", maxpeak="-2")
    assert r.status_code == 201, r.content
    job = Job.objects.get(pk=r.json()["id"])
    assert job.status == "success", job.error
    assert job.params["algorithms"]["loudnesstarget"] == -20
    measured = ebur128(Path(job.outputs.get(kind="media").file.path))
    assert measured["integrated"] == pytest.approx(-20.0, abs=0.5)
    assert measured["true_peak"] <= -2.0


def test_simple_job_refuses_bad_overrides_and_unknown_presets(bob, quiet_wav):
    r = simple_job(bob, quiet_wav, preset="podcast", loudnesstarget="loud")
    assert r.status_code == 400 and "loudnesstarget" in str(r.json())
    r = simple_job(bob, quiet_wav, preset="no-such-preset")
    assert r.status_code == 400 and "no-such-preset" in str(r.json())
    assert not Job.objects.exists()


def test_simple_job_with_action_save_waits_for_start(bob, quiet_wav, run_tasks_inline):
    r = simple_job(bob, quiet_wav, preset="broadcast", action="save")
    job_id = r.json()["id"]
    assert r.json()["status"] == "pending" and r.json()["stage"] == "saved"
    services.jobs_reconcile(pending_grace_seconds=0)  # a saved job is not "lost"
    assert Job.objects.get(pk=job_id).status == "pending"
    r = bob.api.post(f"/api/v1/jobs/{job_id}/start")
    assert r.status_code == 200
    job = Job.objects.get(pk=job_id)
    assert job.status == "success", job.error
    out = job.outputs.get(kind="media")
    assert out.format == "wav"
    assert ebur128(Path(out.file.path))["integrated"] == pytest.approx(-23.0, abs=0.5)


def test_extract_audio_takes_the_audio_track_of_a_video(bob, clip_mp4, run_tasks_inline):
    r = simple_job(bob, clip_mp4, preset="extract-audio")
    job = Job.objects.get(pk=r.json()["id"])
    assert job.status == "success", job.error
    out = job.outputs.get(kind="media")
    assert out.format == "mp3"
    from media_jobs import engine

    facts = engine.probe(out.file.path)
    assert facts.has_audio and not facts.has_video
    assert facts.duration == pytest.approx(6.0, abs=0.2)


def test_jobs_api_creates_and_lists_jobs(bob, acme, quiet_wav, run_tasks_inline):
    inbox = acme.datasets.get(name="inbox")
    with quiet_wav.open("rb") as fh:
        item_id = bob.api.post(f"/api/v1/datasets/{inbox.pk}/items", {"audio": fh}).json()["id"]
    r = bob.api.post(
        "/api/v1/jobs",
        {
            "item": item_id,
            "preset": "podcast",
            "overrides": {"algorithms": {"loudnesstarget": -18}},
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    listed = bob.api.get("/api/v1/jobs?status=success").json()
    assert [j["id"] for j in listed["results"]] == [r.json()["id"]]
    assert listed["results"][0]["params"]["algorithms"]["loudnesstarget"] == -18


def test_a_duplicate_delivery_runs_the_job_once(bob, acme, quiet_wav, media_root):
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"), path=quiet_wav, filename="episode.wav"
    )
    job = services.job_create(item=item, preset=Preset.objects.get(slug="podcast"), start=False)
    Job.objects.filter(pk=job.pk).update(stage="queued")
    tasks.run_job(job.pk)
    tasks.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == "success" and job.attempts == 1
    assert JobOutput.objects.filter(job=job, kind="media").count() == 1
    # one set of outputs: the MP3 and its waveform image, nothing left from the first attempt
    assert JobOutput.objects.filter(job=job).count() == 2
    outputs_dir = media_root / f"workspaces/{acme.pk}/jobs/{job.pk}"
    assert sorted(p.name for p in outputs_dir.iterdir()) == sorted(
        o.filename for o in job.outputs.all()
    )


def test_a_job_with_a_live_lease_is_not_claimed_twice(bob, acme, quiet_wav):
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"), path=quiet_wav, filename="episode.wav"
    )
    job = services.job_create(item=item, preset=Preset.objects.get(slug="podcast"), start=False)
    Job.objects.filter(pk=job.pk).update(stage="queued")
    assert services.job_claim(job_id=job.pk) is not None
    assert services.job_claim(job_id=job.pk) is None
    # once the lease runs out (the worker died), it can be claimed again, with a new fence
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    claimed = services.job_claim(job_id=job.pk)
    assert claimed is not None and claimed[0].attempts == 2
    # the first worker's lease token no longer fences anything: it can't finish the job
    assert not services.job_succeed(job=job, token="stale-token", statistics={})


def test_the_reconciler_resumes_a_job_whose_worker_vanished(bob, acme, quiet_wav, run_tasks_inline):
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"), path=quiet_wav, filename="episode.wav"
    )
    job = services.job_create(item=item, preset=Preset.objects.get(slug="podcast"), start=False)
    Job.objects.filter(pk=job.pk).update(
        status="running",
        stage="encoding",
        attempts=1,
        lease_expires_at=timezone.now() - timedelta(seconds=5),
    )
    report = services.jobs_reconcile()
    assert report.resumed == [job.pk]
    job.refresh_from_db()
    assert job.status == "success" and job.attempts == 2
    assert job.outputs.filter(kind="media").count() == 1


def test_the_reconciler_gives_up_after_too_many_lost_workers(bob, acme, quiet_wav, settings):
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"), path=quiet_wav, filename="episode.wav"
    )
    job = services.job_create(item=item, preset=Preset.objects.get(slug="podcast"), start=False)
    Job.objects.filter(pk=job.pk).update(
        status="running", attempts=settings.JOB_MAX_ATTEMPTS, lease_expires_at=timezone.now()
    )
    assert services.jobs_reconcile().failed == [job.pk]
    job.refresh_from_db()
    assert job.status == "failed" and "gave up" in job.error


def test_cancel_stops_a_pending_job_and_refuses_a_finished_one(
    bob, acme, quiet_wav, run_tasks_inline
):
    r = simple_job(bob, quiet_wav, preset="podcast", action="save")
    job_id = r.json()["id"]
    r = bob.api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    tasks.run_job(job_id)  # a late delivery does nothing
    assert Job.objects.get(pk=job_id).status == "cancelled"
    assert not JobOutput.objects.filter(job_id=job_id).exists()
    r = bob.api.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409


def test_a_running_job_notices_cancellation_at_its_next_heartbeat(bob, acme, quiet_wav):
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"), path=quiet_wav, filename="episode.wav"
    )
    job = services.job_create(item=item, preset=Preset.objects.get(slug="podcast"), start=False)
    Job.objects.filter(pk=job.pk).update(stage="queued")
    job, token = services.job_claim(job_id=job.pk)
    beat = services.Heartbeat(job, token)
    assert beat.report(40, "encoding") is True
    beat.beat()
    job.refresh_from_db()
    assert (job.progress, job.stage) == (40, "encoding")
    services.job_cancel(job=job)
    beat.beat()
    assert beat.cancelled.is_set()
    assert beat.report(50, "encoding") is False


def test_a_permanent_engine_error_fails_the_job_with_its_message(
    bob, acme, quiet_wav, run_tasks_inline
):
    item = services.item_create_from_path(
        dataset=acme.datasets.get(name="inbox"), path=quiet_wav, filename="episode.wav"
    )
    # The stored input disappears (e.g. removed by an operator) before the worker gets it.
    item.input_file.storage.delete(item.input_file.name)
    services.job_create(item=item, preset=Preset.objects.get(slug="podcast"))
    job = Job.objects.get(item=item)
    assert job.status == "failed" and job.error
    item.refresh_from_db()
    assert item.status == "failed"
