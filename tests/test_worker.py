"""A real django-q2 cluster in its own process: jobs run, and survive a worker killed with -9."""

from __future__ import annotations

import contextlib
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
    """Wait until PostgreSQL has reaped the killed workers' sessions, so the test DB can drop.

    Sessions still there after the wait (a process that was killed mid-query can leave its
    backend behind for a while) are terminated and named on stderr, so the database can go.
    """
    if connection.vendor != "postgresql":
        return
    others_sql = (
        "SELECT pid, application_name, state, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    terminate_sql = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def others() -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(others_sql)
            return cursor.fetchall()

    deadline = time.monotonic() + timeout
    while (left := others()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        sys.stderr.write(f"terminating leftover database sessions: {left}\n")
        with connection.cursor() as cursor:
            cursor.execute(terminate_sql)


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


class WebServer:
    """`manage.py runserver` in its own process, serving the provider emulators."""

    def __init__(self, media_root: Path, data_dir: Path, log: Path):
        from tests.conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MEDIA_ROOT": str(media_root),
            "DATA_DIR": str(data_dir),
            "SANDBOX_PROVIDERS": "True",
            "SITE_URL": self.url,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            cwd=ROOT,
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        import requests

        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def test_a_worker_killed_while_tracking_a_remote_job_is_resumed(acme, alice, tmp_path, media_root):
    """The remote flow across real processes: web (emulators), a worker killed with -9, another."""
    import requests
    from django.db import transaction

    from media_jobs import tracking
    from media_jobs.connections import account_create

    data_dir = tmp_path / "data"
    web = WebServer(media_root, data_dir, tmp_path / "web.log")
    clusters: list[Cluster] = []
    try:
        wait_for(web.ready, 60, "the web server", tmp_path / "web.log")
        # Each emulated job stays in processing for a while, so the worker dies mid-tracking.
        requests.post(
            f"{web.url}/sandbox/apyhub/_control", json={"processing_delay": 6}, timeout=10
        )

        def start_cluster() -> Cluster:
            c = Cluster(media_root, tmp_path / "qcluster.log")
            c.env.update({k: v for k, v in web.env.items() if k != "DATABASE_URL"})
            clusters.append(c.start())
            return c

        first = start_cluster()
        account_create(workspace=acme, provider="apyhub", credentials={"api_key": "apy-e2e"})
        preset = Preset.objects.create(
            workspace=acme, slug="extract-remote", name="Extract remotely", provider="apyhub"
        )
        clip = samples.video_with_tone(tmp_path / "clip.mp4", seconds=5)
        with transaction.atomic():
            item = services.item_create_from_path(
                dataset=acme.datasets.get(name="inbox"), path=clip, filename="clip.mp4"
            )
            job = services.job_create(item=item, preset=preset, user=alice.user)
        wait_for(
            lambda: Job.objects.filter(pk=job.pk, remote_state__submitted=True).exists(),
            120,
            "the remote job to be submitted",
            first.log,
        )
        tracking.jobs_enqueue_due(now=timezone_now_plus(60))  # a poll is handed to the worker
        first.kill9()

        start_cluster()

        def tick() -> bool:
            services.jobs_reconcile()
            tracking.jobs_enqueue_due(now=timezone_now_plus(60))
            return Job.objects.filter(pk=job.pk, status__in=["success", "failed"]).exists()

        wait_for(tick, 180, "the remote job to finish", tmp_path / "qcluster.log")
        job.refresh_from_db()
        assert job.status == "success", job.error
        calls = requests.get(f"{web.url}/sandbox/apyhub/_requests", timeout=10).json()["requests"]
        submits = [c for c in calls if c["method"] == "POST" and "/job/extract/" in c["path"]]
        assert len(submits) == 1  # one remote job, though two workers handled it
        (out,) = job.outputs.filter(kind="media")
        facts = engine_probe(Path(out.file.path))
        assert facts.has_audio and not facts.has_video
        assert facts.duration == pytest.approx(5.0, abs=0.3)
    finally:
        for c in clusters:
            c.stop()
        web.stop()
        wait_for_other_sessions_to_end()


def timezone_now_plus(seconds: float):
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() + timedelta(seconds=seconds)


def engine_probe(path: Path):
    from media_jobs import engine

    return engine.probe(path)


def descendants(pid: int) -> set[int]:
    """Return the pids of a process's children, grandchildren and so on (Linux /proc)."""
    found: set[int] = set()
    queue = [pid]
    while queue:
        current = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    queue.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.django_db
def test_ctrl_c_on_serve_stops_the_server_the_worker_and_its_workers(tmp_path):
    """`make run`'s serve: one Ctrl-C (SIGINT to its group) leaves no process behind."""
    import requests

    from tests.conftest import free_port

    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "REDIS_URL": "",
        "Q_WORKERS": "2",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # like a terminal: Ctrl-C goes to this whole group
    )
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, 60, "serve to answer", tmp_path / "serve.log")
        wait_for(lambda: len(descendants(serve.pid)) >= 5, 30, "the cluster's workers")
        family = descendants(serve.pid)
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(timeout=40)
        wait_for(lambda: not any(alive(pid) for pid in family), 10, "every child to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
