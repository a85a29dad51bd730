"""Run the built-in engine on local files, without the queue: one JSON document per file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from media_jobs import engine
from media_jobs.engine import pipeline
from media_jobs.models import Preset
from media_jobs.services import ALGORITHM_FIELDS, effective_params, parse_value


def parse_setting(text: str) -> tuple[list[str], Any]:
    """Return the key path and value of one `--set key=value` (JSON values where they parse)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CommandError(f"--set {text!r}: expected key=value")
    path = key.split(".")
    if len(path) == 1 and key in ALGORITHM_FIELDS:
        try:
            return ["algorithms", key], parse_value(key, raw, ALGORITHM_FIELDS[key])
        except ValueError as exc:
            raise CommandError(f"--set {text!r}: {exc}") from exc
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def overrides_from(settings: list[str]) -> dict[str, Any]:
    """Build job-style overrides from `--set` arguments."""
    overrides: dict[str, Any] = {}
    for text in settings:
        path, value = parse_setting(text)
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CommandError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return overrides


class Command(BaseCommand):
    help = "Process local files with a preset on the built-in engine and print their statistics."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument("--preset", required=True, help="slug of a global preset")
        parser.add_argument("--workspace", default="", help="look the preset up in this workspace")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            dest="assignments",
            metavar="KEY=VALUE",
            help="override a parameter: loudnesstarget=-20, metadata.title=Ep1, "
            'output_files=\'[{"format": "flac"}]\'',
        )
        parser.add_argument("--output-dir", type=Path, default=Path("."))

    def handle(self, *args, files, preset, workspace, assignments, output_dir, **options):
        chosen = self.find_preset(preset, workspace)
        if chosen.provider != "local":
            raise CommandError(
                f"Preset {preset!r} runs on {chosen.provider}, not the built-in engine."
            )
        try:
            params = effective_params(chosen, overrides_from(assignments))
        except ValueError as exc:
            raise CommandError(f"Invalid parameters: {exc}") from exc
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CommandError(f"No such file: {', '.join(missing)}")
        output_dir.mkdir(parents=True, exist_ok=True)
        failed = 0
        for path in files:
            try:
                result = pipeline.run(path, params, output_dir, basename=path.stem)
            except engine.EngineError as exc:
                failed += 1
                self.stderr.write(f"{path}: {exc}")
                self.stdout.write(json.dumps({"input": str(path), "error": str(exc)}))
                continue
            self.stdout.write(json.dumps(document(path, result)))
        if failed:
            raise CommandError(f"{failed} of {len(files)} file(s) failed.")

    def find_preset(self, slug: str, workspace: str) -> Preset:
        qs = Preset.objects.filter(slug=slug)
        found = (qs.filter(workspace__slug=workspace).first() if workspace else None) or qs.filter(
            workspace=None
        ).first()
        if found is None:
            known = ", ".join(Preset.objects.filter(workspace=None).values_list("slug", flat=True))
            raise CommandError(f"Unknown preset {slug!r}. Global presets: {known}.")
        return found


def document(path: Path, result) -> dict[str, Any]:
    """Return the JSON report of one processed file."""
    return {
        "input": str(path),
        "statistics": result.statistics,
        "outputs": [
            {
                "format": o.format,
                "path": str(o.path),
                "size": o.size,
                "checksum": o.checksum,
                "statistics": o.statistics,
            }
            for o in result.outputs
        ],
        "reports": [str(o.path) for o in result.reports],
    }
