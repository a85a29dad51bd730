"""Seed a demo user, workspace and generated sample media (safe to run again)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User, Workspace
from accounts.services import workspace_create
from media_jobs import samples, services
from media_jobs.models import Preset

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - a published demo login for a local portal


class Command(BaseCommand):
    help = "Create the demo user, workspace and sample items, and run one podcast job."

    def handle(self, *args, **options):
        user = User.objects.filter(email=DEMO_EMAIL).first()
        if user is None:
            user = User.objects.create_user(email=DEMO_EMAIL, password=DEMO_PASSWORD)
        ws = Workspace.objects.filter(slug="demo").first() or workspace_create(
            name="Demo", owner=user, slug="demo"
        )
        inbox = ws.datasets.get(name="inbox")
        if not inbox.items.exists():
            self.seed_items(inbox, user)
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (workspace 'demo')")

    def seed_items(self, inbox, user) -> None:
        podcast = Preset.objects.get(workspace=None, slug="podcast")
        with tempfile.TemporaryDirectory() as tmp:
            speech = samples.speech_like(Path(tmp) / "interview.wav", seconds=30, gain_db=-20)
            video = samples.video_with_tone(Path(tmp) / "clip.mp4", seconds=8)
            with transaction.atomic():
                item = services.item_create_from_path(
                    dataset=inbox,
                    path=speech,
                    filename="interview.wav",
                    title="Sample interview",
                    description="Generated speech-like recording",
                    user=user,
                )
                services.item_create_from_path(
                    dataset=inbox, path=video, filename="clip.mp4", title="Sample clip", user=user
                )
                services.job_create(item=item, preset=podcast, user=user)
