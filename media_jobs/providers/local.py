"""The built-in ffmpeg engine as a provider, so everything works with no external account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from media_jobs import engine
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
            return engine.validate_params(params)
        except engine.EngineError as exc:
            raise ValueError(str(exc)) from exc

    def run(self, job, *, input_path: Path, workdir: Path, progress: ProgressFn) -> RunResult:
        def on_progress(fraction: float, stage: str) -> bool:
            lo, hi = ENGINE_SPAN
            return progress(int(lo + (hi - lo) * max(0.0, min(1.0, fraction))), stage)

        basename = Path(job.item.original_filename or "output").stem or "output"
        try:
            result = engine.process(
                input_path, job.params, workdir, basename=basename, progress=on_progress
            )
        except engine.EngineCancelled as exc:
            raise JobCancelled from exc
        except engine.EngineError as exc:
            # The engine only raises for input or parameters it cannot handle: retrying won't help.
            raise ProviderError(str(exc), permanent=True) from exc
        outputs = [
            Output(o.format, o.filename, Path(o.path), o.size, o.checksum, o.statistics)
            for o in result.outputs
        ]
        return RunResult(outputs=outputs, statistics=result.statistics)
