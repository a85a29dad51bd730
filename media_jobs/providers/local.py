"""The built-in ffmpeg engine as a provider, so everything works with no external account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from media_jobs import engine
from media_jobs.engine import multitrack, pipeline
from media_jobs.engine.params import (
    DEFAULT_TARGET,
    DENOISE_MAX,
    MAXPEAK_MIN,
    TARGET_MAX,
    TARGET_MIN,
)
from media_jobs.providers.base import (
    JobCancelled,
    Output,
    Param,
    ProgressFn,
    Provider,
    ProviderError,
    RunResult,
)

# The engine reports one fraction for its whole run; it fills this span of the job's progress
# (downloading the input comes before it, storing the outputs after).
ENGINE_SPAN = (5, 95)


class LocalProvider(Provider):
    kind = "local"
    label = "Built-in engine"
    inline = True
    # Auphonic's nested names, addressed as dotted paths. The preset forms are derived from these;
    # validation stays with the engine (pipeline.validate), which knows the rules between them.
    parameters = (
        Param(
            "algorithms.filtering",
            bool,
            "High-pass filter",
            help="Remove rumble and low-frequency noise.",
            default=False,
        ),
        Param(
            "algorithms.leveler",
            bool,
            "Leveler",
            help="Even out the levels of speakers and parts.",
            default=False,
        ),
        Param(
            "algorithms.denoise",
            bool,
            "Noise reduction",
            help="Remove background noise measured from the quiet parts.",
            default=False,
        ),
        Param(
            "algorithms.denoiseamount",
            float,
            "Noise reduction amount (dB)",
            help="How much noise to remove; 0 lets the engine decide.",
            default=0.0,
            min=0,
            max=DENOISE_MAX,
        ),
        Param(
            "algorithms.normloudness",
            bool,
            "Loudness normalisation",
            help="Bring the integrated loudness (EBU R128) to the target below.",
            default=False,
        ),
        Param(
            "algorithms.loudnesstarget",
            float,
            "Loudness target (LUFS)",
            help="With loudness normalisation: -16 for podcasts, -23 for broadcast.",
            default=DEFAULT_TARGET,
            min=TARGET_MIN,
            max=TARGET_MAX,
        ),
        Param(
            "algorithms.maxpeak",
            float,
            "Maximum true peak (dBTP)",
            help="With loudness normalisation; 0 picks -1 for targets of -18 LUFS and up, else -2.",
            default=0.0,
            min=MAXPEAK_MIN,
            max=0,
        ),
        Param(
            "algorithms.silence_cutter",
            bool,
            "Silence cutter",
            help="Shorten long pauses (not with a video output).",
            default=False,
        ),
        Param(
            "output_files",
            list,
            "Output files",
            help="[{format, bitrate, filename, suffix, mono_mixdown}]; formats: mp3, mp3-vbr, "
            "vorbis, opus, aac, flac, alac, wav, wav-24bit, video.",
            default=[{"format": "mp3", "bitrate": 128}],
        ),
        Param(
            "metadata",
            dict,
            "Metadata tags",
            help="{title, artist, album, track, subtitle, summary, genre, year, publisher, url, "
            "license, license_url, tags, location}, written into every output.",
        ),
        # Text or a JSON list (engine/chapters.py reads both): `object` asks for either.
        Param(
            "chapters",
            object,
            "Chapter marks",
            help='One per line ("00:02:18 Title <https://...>"), or a JSON list of '
            '{"start", "title", "url", "image"}.',
        ),
        Param(
            "video.start_time",
            float,
            "Start at (seconds)",
            help="Where in the input the production begins.",
            default=0.0,
            min=0,
        ),
        Param(
            "video.duration",
            float,
            "Length (seconds)",
            help="How much to keep from the start; empty keeps the rest.",
            min=0,
        ),
    )

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return pipeline.validate(params)
        except engine.EngineError as exc:
            raise ValueError(str(exc)) from exc

    def run(self, job, *, input_path: Path, workdir: Path, progress: ProgressFn) -> RunResult:
        def on_progress(fraction: float, stage: str) -> bool:
            lo, hi = ENGINE_SPAN
            return progress(int(lo + (hi - lo) * max(0.0, min(1.0, fraction))), stage)

        basename = Path(job.item.original_filename or "output").stem or "output"
        try:
            inputs = resolve_inputs(job, input_path, workdir)
            is_multitrack = any(spec.type == "multitrack" for spec in inputs)
            result = pipeline.run(
                None if is_multitrack else input_path,
                job.params,
                workdir,
                basename=basename,
                inputs=inputs,
                progress=on_progress,
            )
        except engine.EngineCancelled as exc:
            raise JobCancelled from exc
        except engine.EngineError as exc:
            # The engine only raises for input or parameters it cannot handle: retrying won't help.
            raise ProviderError(str(exc), permanent=True) from exc
        outputs = [to_output(o, "media") for o in result.outputs]
        outputs += [to_output(o, "report") for o in result.reports]
        return RunResult(outputs=outputs, statistics=result.statistics)


def to_output(o: engine.OutputFile, kind: str) -> Output:
    return Output(o.format, o.filename, Path(o.path), o.size, o.checksum, o.statistics, kind=kind)


def resolve_inputs(job, input_path: Path, workdir: Path) -> list[multitrack.InputSpec]:
    """Turn multi_input_files into local files: each names an item of the job's workspace.

    An entry without an `item` is the job's own item (the usual first track of a multitrack
    production); another workspace's item is refused like a missing one.
    """
    from media_jobs.models import MediaItem
    from media_jobs.services import local_copy

    specs = []
    for index, entry in enumerate(job.params.get("multi_input_files") or []):
        item_id = entry.get("item")
        if item_id in (None, "", job.item_id):
            path = input_path
        else:
            item = MediaItem.objects.filter(
                pk=item_id, dataset__workspace_id=job.workspace_id
            ).first()
            if item is None or not item.input_file:
                raise ProviderError(
                    f"multi_input_files[{index}]: item {item_id} is not a stored item of this "
                    "workspace.",
                    permanent=True,
                )
            folder = workdir / "inputs" / str(index)
            folder.mkdir(parents=True, exist_ok=True)
            path = local_copy(item.input_file, folder)
        specs.append(
            multitrack.InputSpec(
                entry["type"],
                Path(path),
                id=entry.get("id", ""),
                algorithms=entry.get("algorithms") or {},
                offset=float(entry.get("offset") or 0.0),
            )
        )
    return specs
