"""The built-in ffmpeg engine as a provider, so everything works with no external account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from media_jobs import engine
from media_jobs.engine import multitrack, pipeline
from media_jobs.providers.base import (
    JobCancelled,
    Output,
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
