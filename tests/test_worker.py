"""A real django-q2 cluster in its own process: jobs run, and survive a worker killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from media_jobs import samples, services
from media_jobs.models import Job, JobOutput, Preset
from tests.media import ebur128

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """Return a URL for the test database, so the worker process shares it."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Cluster:
    """A `manage.py qcluster` process group using the test database and storage."""

    def __init__(self, media_root: Path, log: Path):
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(media_root),
            "JOB_LEASE_SECONDS": "4",
            "JOB_HEARTBEAT_SECONDS": "1",
            "Q_WORKERS": "1",
        }
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Cluster:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so -9 reaches every worker
        )
        return self

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    detail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


@pytest.fixture
def cluster(media_root, tmp_path):
    clusters: list[Cluster] = []

    def make() -> Cluster:
        c = Cluster(media_root, tmp_path / "qcluster.log").start()
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.stop()
    wait_for_other_sessions_to_end()


def wait_for_other_sessions_to_end(timeout: float = 15) -> None:
    """Wait until PostgreSQL has reaped the killed workers' sessions, so the test DB can drop."""
    if connection.vendor != "postgresql":
        return
    sql = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def alone() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0] == 0

    wait_for(alone, timeout, "worker database sessions to end")


@pytest.fixture(scope="session")
def long_wav(tmp_path_factory) -> Path:
    # Long enough that the engine is still working when we kill it.
    return samples.speech_like(
        tmp_path_factory.mktemp("worker") / "long.wav", seconds=900, gain_db=-26
    )


def make_job(acme, path: Path) -> Job:
    from django.db import transaction

    with transaction.atomic():
        item = services.item_create_from_path(
            dataset=acme.datasets.get(name="inbox"), path=path, filename=path.name
        )
        return services.job_create(item=item, preset=Preset.objects.get(slug="podcast"))


def test_a_worker_killed_mid_job_is_resumed_and_finishes_once(
    acme, bob, cluster, long_wav, media_root, tmp_path
):
    first = cluster()
    job = make_job(acme, long_wav)
    log = first.log
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status="running", progress__gte=10).exists(),
        180,
        "the job to be running",
        log,
    )
    first.kill9()
    job.refresh_from_db()
    assert job.status == "running" and job.attempts == 1 and job.progress < 100

    cluster()  # a fresh worker; the reconciler hands it the orphaned job once the lease lapses
    wait_for(lambda: services.jobs_reconcile().resumed, 30, "the lease to lapse", log)
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status__in=["success", "failed"]).exists(),
        300,
        "the resumed job to finish",
        log,
    )
    job.refresh_from_db()
    assert job.status == "success", job.error
    assert job.attempts == 2
    assert JobOutput.objects.filter(job=job, kind="media").count() == 1
    # one set of outputs: the MP3 and its waveform image, nothing left from the first attempt
    assert JobOutput.objects.filter(job=job).count() == 2
    out_dir = media_root / f"workspaces/{acme.pk}/jobs/{job.pk}"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        o.filename for o in job.outputs.all()
    )
    measured = ebur128(Path(job.outputs.get(kind="media").file.path))
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)


def test_the_cluster_runs_queued_jobs_through_the_configured_broker(acme, cluster, tmp_path):
    wav = samples.speech_like(tmp_path / "short.wav", seconds=5, gain_db=-20)
    c = cluster()
    job = make_job(acme, wav)
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status="success").exists(),
        120,
        f"the job to succeed via {'redis' if settings.REDIS_URL else 'orm'} broker",
        c.log,
    )
