"""Seed the global presets and the reconciler's schedule."""

from django.db import migrations

PRESETS = [
    {
        "slug": "podcast",
        "name": "Podcast",
        "description": "EBU R128 loudness to -16 LUFS, true peak at most -1 dBTP, high-pass "
        "filtering, MP3 128 kbps.",
        "params": {
            "algorithms": {
                "filtering": True,
                "normloudness": True,
                "loudnesstarget": -16,
                "maxpeak": -1,
            },
            "output_files": [{"format": "mp3", "bitrate": 128}],
        },
    },
    {
        "slug": "broadcast",
        "name": "Broadcast",
        "description": "EBU R128 broadcast loudness: -23 LUFS, true peak at most -1 dBTP, WAV.",
        "params": {
            "algorithms": {
                "filtering": False,
                "normloudness": True,
                "loudnesstarget": -23,
                "maxpeak": -1,
            },
            "output_files": [{"format": "wav"}],
        },
    },
    {
        "slug": "extract-audio",
        "name": "Extract audio",
        "description": "The audio track of a video, as MP3.",
        "params": {
            "algorithms": {"filtering": False, "normloudness": False},
            "output_files": [{"format": "mp3", "bitrate": 192}],
        },
    },
]


def seed(apps, schema_editor):
    Preset = apps.get_model("media_jobs", "Preset")
    for p in PRESETS:
        Preset.objects.update_or_create(
            workspace=None, slug=p["slug"], defaults={**p, "provider": "local"}
        )
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="reconcile-jobs",
        defaults={
            "func": "media_jobs.tasks.reconcile_jobs",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def unseed(apps, schema_editor):
    apps.get_model("media_jobs", "Preset").objects.filter(
        workspace=None, slug__in=[p["slug"] for p in PRESETS]
    ).delete()
    apps.get_model("django_q", "Schedule").objects.filter(name="reconcile-jobs").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("media_jobs", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
