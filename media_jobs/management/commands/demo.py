"""Seed a demo user, workspace and generated sample media (safe to run again)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
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
        if settings.SANDBOX_PROVIDERS and not ws.provider_accounts.exists():
            self.seed_remote(ws, inbox, user)
            self.stdout.write("Sandbox providers: one account, preset and job on each.")
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD} (workspace 'demo')")

    def seed_remote(self, ws, inbox, user) -> None:
        """Connect every remote provider's emulator and run one job on each."""
        from media_jobs.connections import account_create
        from media_jobs.providers import get_provider

        speech = inbox.items.get(original_filename="interview.wav")
        clip = inbox.items.get(original_filename="clip.mp4")
        with transaction.atomic():
            for kind, (name, credentials, params, item) in remote_demo(speech, clip).items():
                account_create(workspace=ws, provider=kind, credentials=credentials)
                preset = Preset.objects.create(
                    workspace=ws,
                    slug=f"{kind}-demo",
                    name=name,
                    provider=kind,
                    params=get_provider(kind).validate_params(params),
                )
                services.job_create(item=item, preset=preset, user=user)

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


def remote_demo(speech, clip) -> dict:
    """Return, per remote provider: preset name, sandbox credentials, preset params, the item."""
    key = {"api_key": "sandbox-demo-key"}
    ava = "5a3e0b6c-1f2d-4c8e-9b7a-0d1e2f3a4b02"  # a voice of the Respeecher emulator's catalogue
    return {
        "auphonic": (
            "Auphonic podcast",
            key,
            {
                "algorithms": {"filtering": True, "leveler": True, "normloudness": True},
                "output_files": [{"format": "mp3", "bitrate": 128}],
            },
            speech,
        ),
        "dolby": (
            "Dolby enhance",
            {"app_key": "sandbox-demo-app", "app_secret": "sandbox-demo-secret"},
            {"operation": "enhance", "content_type": "podcast"},
            speech,
        ),
        "apyhub": ("ApyHub extract audio", key, {"output_format": "mp3"}, clip),
        "audioscrape": ("Audioscrape transcript", key, {"dataset_id": 1}, speech),
        "respeecher": ("Respeecher voice", key, {"voices": [{"voice_id": ava}]}, speech),
    }
