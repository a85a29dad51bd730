"""The pipelines compared: the engine, an ideal hand-written ffmpeg run, naive loudnorm."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from media_jobs.engine import ffmpeg_binary, pipeline, process
from media_jobs.engine.params import FORMATS

HIGHPASS_HZ = 80
MP3_BITRATE = 128
# The ideal pipeline leaves the same true-peak headroom as the engine does for MP3: its
# limiter sits this far (dB) under the ceiling, because the encoder raises peaks again.
MP3_PEAK_MARGIN = 1.0
# Include the limiter only when the gained true peak comes this close (dB) to its limit.
LIMITER_GUARD = 0.2
NAIVE_LRA = 11
# The engine's progress reaches this fraction when its first render is done; correction
# renders report from here on (media_jobs/engine/processing.py).
ENGINE_FIRST_RENDER_END = 0.9

_NUMBER = r"(-?(?:\d+(?:\.\d+)?|inf))"
_INTEGRATED_RE = re.compile(rf"^\s*I:\s+{_NUMBER} LUFS")
_LRA_RE = re.compile(rf"^\s*LRA:\s+{_NUMBER} LU\b")
_PEAK_RE = re.compile(rf"^\s*Peak:\s+{_NUMBER} dBFS")


@dataclasses.dataclass
class Level:
    """Integrated loudness, loudness range and true peak as ebur128 reports them."""

    integrated: float
    lra: float
    true_peak: float


@dataclasses.dataclass
class Outcome:
    """What a pipeline wrote, how long its parts took, and what it decided."""

    outputs: dict[str, Path]  # format -> file
    stages: dict[str, float]  # part -> wall seconds
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def podcast_params() -> dict[str, Any]:
    """Return the podcast preset's params exactly as the seed migration ships them."""
    # The module name starts with a digit, so it cannot be imported with a plain import.
    seed = importlib.import_module("media_jobs.migrations.0002_seed_presets_and_schedule")
    for preset in seed.PRESETS:
        if preset["slug"] == "podcast":
            return json.loads(json.dumps(preset["params"]))  # a deep copy
    raise LookupError("The podcast preset is missing from the seed migration.")


def ffmpeg(args: list[str]) -> list[str]:
    """Run ffmpeg with args and return its log lines; raise RuntimeError on failure."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *args]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    lines = proc.stderr.decode("utf-8", "replace").splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): " + " | ".join(lines[-5:]))
    return lines


def ffmpeg_version() -> str:
    """Return ffmpeg's version line."""
    out = subprocess.run(
        [ffmpeg_binary(), "-version"], capture_output=True, check=True, stdin=subprocess.DEVNULL
    )
    return out.stdout.decode("utf-8", "replace").splitlines()[0]


def parse_ebur128(lines: list[str]) -> Level:
    """Return the figures of the last ebur128 Summary in ffmpeg's log."""
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith("Summary:")]
    if not starts:
        raise RuntimeError("ffmpeg printed no ebur128 summary")
    values: dict[str, float] = {}
    for line in lines[starts[-1] :]:
        for key, pattern in (("i", _INTEGRATED_RE), ("lra", _LRA_RE), ("peak", _PEAK_RE)):
            match = pattern.match(line)
            if match and key not in values:
                values[key] = float(match.group(1))
    if "i" not in values or "peak" not in values:
        raise RuntimeError("the ebur128 summary has no integrated loudness or true peak")
    return Level(integrated=values["i"], lra=values.get("lra", math.nan), true_peak=values["peak"])


def ebur128(path: Path, chain: str = "") -> Level:
    """Measure a file (after an optional filter chain) with ebur128=peak=true."""
    graph = ",".join(filter(None, [chain, "ebur128=peak=true:framelog=quiet"]))
    return parse_ebur128(
        ffmpeg(["-i", str(path), "-map", "0:a:0", "-af", graph, "-f", "null", "-"])
    )


def _working_chain() -> list[str]:
    """Return the filters before the gain: double precision, then the 80 Hz high-pass."""
    # Doubles from the start, as the engine does: left to negotiate, highpass may run in the
    # input's s16 and clip; both pipelines should compute the same thing.
    return ["aformat=sample_fmts=dbl", f"highpass=f={HIGHPASS_HZ}"]


def run_engine(
    source: Path, params: dict[str, Any], out_dir: Path, basename: str = "engine"
) -> Outcome:
    """Run the built-in engine, timing its stages from the progress callback."""
    start = time.perf_counter()
    first_seen: dict[str, float] = {}

    def progress(fraction: float, stage: str) -> None:
        # Split the correction renders from the first so a re-render shows as its own cost.
        if stage == "encoding" and fraction >= ENGINE_FIRST_RENDER_END and stage in first_seen:
            stage = "re-encoding"
        first_seen.setdefault(stage, time.perf_counter())

    result = process(source, params, out_dir, basename=basename, progress=progress)
    end = time.perf_counter()
    # Each stage lasts from its first report to the next stage's first report.
    marks = sorted(first_seen.items(), key=lambda item: item[1])
    bounds = [start, *(at for _, at in marks[1:]), end]
    stages = {stage: bounds[i + 1] - bounds[i] for i, (stage, _) in enumerate(marks)}
    stats = result.statistics
    return Outcome(
        outputs={output.format: output.path for output in result.outputs},
        stages=stages,
        details={
            "renders": stats.get("renders"),
            "limiter": stats.get("limiter"),
            "gain_db": stats.get("gain"),
            "warnings": stats.get("warnings", []),
        },
    )


def run_job(source: Path, params: dict[str, Any], out_dir: Path) -> Outcome:
    """Run what a job runs around the engine: process, tags, both reports and the waveform."""
    start = time.perf_counter()
    marks: dict[str, float] = {}

    def progress(fraction: float, stage: str) -> None:
        marks.setdefault(stage, time.perf_counter())

    result = pipeline.run(source, params, out_dir, basename="job", progress=progress)
    end = time.perf_counter()
    reporting = marks.get("reporting", end)
    return Outcome(
        outputs={output.format: output.path for output in result.outputs},
        stages={"process": reporting - start, "reports": end - reporting},
        details={"renders": result.statistics.get("renders"), "reports": len(result.reports)},
    )


def run_ideal(source: Path, out_path: Path, target: float, ceiling: float) -> Outcome:
    """Measure once with ebur128, then filter, gain, limit and encode in one pass."""
    start = time.perf_counter()
    measured = ebur128(source, ",".join(_working_chain()))
    measured_at = time.perf_counter()
    # No compensation for LAME's own scaling: at 128k CBR it measures ~0.1 dB here, well
    # inside the tolerance (the engine pre-compensates 0.45 dB).
    gain = target - measured.integrated
    limit = ceiling - MP3_PEAK_MARGIN
    filters = [*_working_chain(), f"volume={gain:.2f}dB:precision=double"]
    limited = measured.true_peak + gain > limit - LIMITER_GUARD
    if limited:
        # level=0: no make-up gain; latency=1: compensate the lookahead delay.
        filters.append(f"alimiter=limit={10 ** (limit / 20):.6f}:level=0:latency=1")
    ffmpeg(
        [
            "-y", "-i", str(source), "-map", "0:a:0", "-af", ",".join(filters),
            "-c:a", "libmp3lame", "-b:a", f"{MP3_BITRATE}k", "-map_metadata", "-1",
            "-f", "mp3", str(out_path),
        ]
    )  # fmt: skip
    end = time.perf_counter()
    return Outcome(
        outputs={"mp3": out_path},
        stages={"measure": measured_at - start, "encode": end - measured_at},
        details={"gain_db": round(gain, 2), "limiter": limited, "limit_dbtp": round(limit, 2)},
    )


def run_encoder_alone(source: Path, out_stem: Path, fmt: str, bitrate: int) -> Outcome:
    """Encode source as fmt with the engine's encoder settings, and do nothing else.

    What one output's encoder costs by itself: with the one-format run's CPU it bounds from
    below what adding that output can cost on this machine. Its file is not a result (no
    loudness processing), so the outcome lists no outputs to check.
    """
    spec = FORMATS[fmt]
    out_path = out_stem.with_suffix(f".{spec.extension}")
    start = time.perf_counter()
    ffmpeg(
        [
            "-y", "-i", str(source), "-map", "0:a:0", *spec.encoder_args(bitrate),
            "-map_metadata", "-1", str(out_path),
        ]
    )  # fmt: skip
    return Outcome(
        outputs={},
        stages={"encode": time.perf_counter() - start},
        details={"format": fmt, "bitrate": bitrate},
    )


def _loudnorm_json(lines: list[str]) -> dict[str, str]:
    """Return the JSON block loudnorm printed last."""
    opening = max(i for i, line in enumerate(lines) if line.strip() == "{")
    closing = next(i for i in range(opening, len(lines)) if lines[i].strip() == "}")
    return json.loads("\n".join(lines[opening : closing + 1]))


def run_naive(source: Path, out_path: Path, target: float, ceiling: float) -> Outcome:
    """Run the usual two-pass loudnorm recipe (with the same high-pass) and encode MP3."""
    start = time.perf_counter()
    base = f"loudnorm=I={target:g}:TP={ceiling:g}:LRA={NAIVE_LRA}"
    highpass = f"highpass=f={HIGHPASS_HZ}"
    lines = ffmpeg(
        [
            "-i", str(source), "-map", "0:a:0", "-af", f"{highpass},{base}:print_format=json",
            "-f", "null", "-",
        ]
    )  # fmt: skip
    first = _loudnorm_json(lines)
    measured_at = time.perf_counter()
    second = (
        f"{base}:measured_I={first['input_i']}:measured_TP={first['input_tp']}"
        f":measured_LRA={first['input_lra']}:measured_thresh={first['input_thresh']}"
        f":offset={first['target_offset']}:linear=true:print_format=json"
    )
    # loudnorm outputs 192 kHz: the recipe resamples back with -ar.
    lines = ffmpeg(
        [
            "-y", "-i", str(source), "-map", "0:a:0", "-af", f"{highpass},{second}",
            "-ar", "44100", "-c:a", "libmp3lame", "-b:a", f"{MP3_BITRATE}k",
            "-map_metadata", "-1", "-f", "mp3", str(out_path),
        ]
    )  # fmt: skip
    end = time.perf_counter()
    return Outcome(
        outputs={"mp3": out_path},
        stages={"measure": measured_at - start, "encode": end - measured_at},
        details={"normalization_type": _loudnorm_json(lines).get("normalization_type")},
    )
