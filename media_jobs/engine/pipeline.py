"""A whole built-in production: inputs prepared, processed, tagged, reported, drawn.

`process()` renders one input to loudness-verified outputs; this module is what a job runs around
it: intro/outro and multitrack preparation, ID3/MP4/Vorbis tags and chapters on every output, the
detailed loudness report (max momentary and short-term loudness, noise level, SNR) and the
waveform (peaks for the dashboard and a PNG).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import multitrack, report, tags, waveform
from .chapters import Chapter, parse_chapters
from .errors import EngineError, ParamsError
from .params import validate_params
from .processing import OutputFile, process

ProgressCallback = Callable[[float, str], bool | None]
# Keys of params that belong to this layer, not to process().
OWN_KEYS = ("metadata", "chapters", "append_chapters")
WAVEFORM_BUCKETS = 1000
_CHUNK = 1024 * 1024


@dataclass
class Result:
    """Every file a production made and its statistics."""

    outputs: list[OutputFile]
    reports: list[OutputFile] = field(default_factory=list)  # e.g. the waveform image
    statistics: dict[str, Any] = field(default_factory=dict)


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Return a production's params normalised, or raise ParamsError/ValueError saying why."""
    clean = validate_params(params)
    errors: dict[str, str] = {}
    try:
        clean["metadata"] = tags.validate_metadata(params.get("metadata") or {})
    except ValueError as exc:
        errors["metadata"] = str(exc)
    if params.get("chapters") not in (None, "", []):
        try:
            parse_chapters(params["chapters"])
        except ValueError as exc:
            errors["chapters"] = str(exc)
    if params.get("multi_input_files") not in (None, []):
        try:
            flag = params.get("is_multitrack")
            clean["multi_input_files"] = multitrack.validate_multi_inputs(
                params["multi_input_files"], is_multitrack=None if flag is None else bool(flag)
            )
        except ValueError as exc:
            errors["multi_input_files"] = str(exc)
    if errors:
        raise ParamsError(errors)
    return clean


def run(
    main: Path | None,
    params: dict[str, Any],
    out_dir: Path,
    *,
    basename: str = "output",
    inputs: list[multitrack.InputSpec] | None = None,
    progress: ProgressCallback | None = None,
    waveform_image: bool = True,
) -> Result:
    """Run a whole production; main is None for a multitrack production of `inputs`."""
    out_dir = Path(out_dir)
    inputs = inputs or []
    report_progress = progress or (lambda fraction, stage: None)

    def span(lo: float, hi: float) -> ProgressCallback:
        return lambda fraction, stage: report_progress(lo + (hi - lo) * fraction, stage)

    prepared = None
    source = main
    render_params = copy.deepcopy(params)
    for key in OWN_KEYS:
        render_params.pop(key, None)
    if inputs:
        prepared = multitrack.prepare(
            main, inputs, params, out_dir / ".prepare", progress=span(0.0, 0.3)
        )
        source, render_params = prepared.path, prepared.params
        for key in OWN_KEYS:
            render_params.pop(key, None)
    if source is None:
        raise EngineError("A production needs a main input or multitrack inputs.")
    result = process(
        source,
        render_params,
        out_dir,
        basename=basename,
        progress=span(0.3 if inputs else 0.0, 0.85),
    )
    statistics = dict(result.statistics)
    outputs = list(result.outputs)
    if prepared is not None:
        statistics["multi_input"] = prepared.statistics
        for fmt in prepared.track_formats:
            archive = multitrack.zip_tracks(
                prepared.tracks,
                out_dir / f"{basename}.tracks.{fmt}.zip",
                fmt,
                gain_db=float(statistics.get("gain") or 0.0),
            )
            outputs.append(describe(archive, f"tracks-{fmt}"))
        if prepared.path.exists() and prepared.path != main:
            prepared.path.unlink()
    report_progress(0.87, "tagging")
    apply_tags(outputs, params)
    report_progress(0.9, "reporting")
    reports = add_reports(source, outputs, statistics, out_dir, basename, waveform_image)
    report_progress(1.0, "reporting")
    return Result(outputs=outputs, reports=reports, statistics=statistics)


def apply_tags(outputs: list[OutputFile], params: dict[str, Any]) -> None:
    """Write metadata and chapters into every taggable output, then refresh size and checksum."""
    metadata = tags.validate_metadata(params.get("metadata") or {})
    chapters: list[Chapter] | None = None
    if params.get("chapters") not in (None, "", []):
        chapters = parse_chapters(params["chapters"])
    if params.get("append_chapters") is not None:
        metadata["append_chapters"] = bool(params["append_chapters"])
    if not metadata and not chapters:
        return
    for output in outputs:
        if output.format.startswith("tracks-"):
            continue  # zipped raw tracks carry no tags
        duration = output.statistics.get("duration")
        tags.write_tags(output.path, output.format, metadata, chapters, duration=duration)
        output.size, output.checksum = size_and_checksum(output.path)


def add_reports(
    source: Path,
    outputs: list[OutputFile],
    statistics: dict[str, Any],
    out_dir: Path,
    basename: str,
    waveform_image: bool,
) -> list[OutputFile]:
    """Fill in the detailed loudness report of input and output, and draw the waveform.

    The three measures decode different files (or the same one for different ends), each in
    an ffmpeg of its own: they run side by side, so a long programme's reports take the time
    of the longest, not of all three, where there are cores for them.
    """
    media = [o for o in outputs if not o.format.startswith("tracks-")]
    first = media[0] if media else None
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="report") as pool:
        source_report = pool.submit(report.detailed_loudness, source)
        if first is not None:
            # A long programme's output report came with its render (measured in stretches).
            output_report = (
                pool.submit(report.detailed_loudness, first.path)
                if "max_momentary" not in first.statistics
                else None
            )
            waveform_job = pool.submit(
                waveform.waveform_peaks,
                first.path,
                buckets=WAVEFORM_BUCKETS,
                duration=first.statistics.get("duration"),
            )
        measured = source_report.result()
        statistics["input"] = {**measured, **statistics.get("input", {})}
        # process() only estimates the input's true peak (processing's pass 1): the report
        # measures it as BS.1770 asks.
        statistics["input"]["true_peak"] = measured["true_peak"]
        if first is None:
            return []
        detailed = output_report.result() if output_report is not None else {}
        peaks = waveform_job.result()
    statistics["output"] = {**detailed, **statistics.get("output", {})}
    first.statistics = {**detailed, **first.statistics}
    statistics["waveform"] = peaks
    if not waveform_image:
        return []
    image = out_dir / f"{basename}.waveform.png"
    waveform.waveform_png(first.path, image, width=WAVEFORM_BUCKETS, height=200, peaks=peaks)
    return [describe(image, "png")]


def describe(path: Path, fmt: str) -> OutputFile:
    """Describe an extra file a production made (an archive or a report image)."""
    size, checksum = size_and_checksum(path)
    return OutputFile(
        format=fmt, filename=path.name, path=path, size=size, checksum=checksum, statistics={}
    )


def size_and_checksum(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
