"""Measure EBU R128 loudness with ffmpeg's ebur128 filter (not loudnorm: see DESIGN.md)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable
from typing import Any

from .errors import EngineError
from .ffmpeg import FFmpegFailed, ProgressCallback, Reporter, describe, file_url, run_ffmpeg
from .probe import probe

# ebur128 reports -70 LUFS (its absolute gate) when no block is loud enough to count.
SILENCE_LUFS = -70.0

_SUMMARY_RE = re.compile(r"\[ebur128@(\w+) @ [^\]]*\](?: \[\w+\])? Summary:")
_PREFIXED_RE = re.compile(r"^\[[^\]]*\]")
_VALUE_RE = re.compile(r"^\s*(I|LRA|Peak):\s+(-?(?:inf|nan|[\d.]+))", re.IGNORECASE)


@dataclasses.dataclass
class Loudness:
    """Integrated loudness, loudness range and true peak of a programme."""

    integrated: float  # LUFS
    lra: float  # LU
    true_peak: float  # dBTP

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as a JSON-ready dict (silence's -inf peak becomes None)."""
        data = {"integrated": self.integrated, "lra": self.lra, "true_peak": self.true_peak}
        return {key: (value if math.isfinite(value) else None) for key, value in data.items()}

    @property
    def is_silent(self) -> bool:
        """Return True when nothing passed the absolute gate."""
        return not math.isfinite(self.integrated) or self.integrated <= SILENCE_LUFS


def measure(
    path: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    duration: float | None = None,
) -> Loudness:
    """Measure a file's first audio stream with ebur128=peak=true.

    progress(fraction, "analysing") is called as ffmpeg reads; duration (seconds) spares a probe.
    """
    reporter = Reporter(progress)
    if progress is not None and duration is None:
        duration = probe(path).duration
    reporter(0.0, "analysing")
    args = [
        "-vn", "-sn", "-dn", "-i", file_url(path), "-map", "0:a:0",
        "-af", "ebur128@m=peak=true:framelog=quiet", "-f", "null", "-",
    ]  # fmt: skip
    lines = run_checked(args, path, duration=duration, on_progress=reporter.span(0, 1, "analysing"))
    result = parse_summaries(lines).get("m")
    if result is None:
        raise EngineError(f"Loudness could not be measured: no ebur128 summary ({describe(path)})")
    reporter(1.0, "analysing")
    return result


def run_checked(args: list[str], path: str | os.PathLike[str], **kwargs: Any) -> list[str]:
    """Run ffmpeg on an input file, turning its failures into user-facing messages."""
    try:
        return run_ffmpeg(args, **kwargs)
    except FFmpegFailed as exc:
        text = " ".join(exc.messages)
        if "matches no streams" in text:
            raise EngineError(f"File has no audio stream: {describe(path)}") from exc
        if "No such file" in text:
            raise EngineError(f"File not found: {describe(path)}") from exc
        if "Invalid data" in text or "Error opening input" in text:
            raise EngineError(f"File could not be decoded: {describe(path)}") from exc
        raise


def parse_summaries(lines: Iterable[str]) -> dict[str, Loudness]:
    """Return the Summary of every named ebur128 instance (ebur128@name) in ffmpeg's stderr."""
    found: dict[str, dict[str, float]] = {}
    current: dict[str, float] | None = None
    section = ""
    for line in lines:
        match = _SUMMARY_RE.search(line)
        if match:
            current = found.setdefault(match.group(1), {})
            section = ""
            continue
        if current is None:
            continue
        if _PREFIXED_RE.match(line):
            # Another component's log line may land between a summary's pieces; skip it.
            continue
        stripped = line.strip()
        if stripped.endswith("peak:"):
            section = stripped.split()[0].lower()  # "true" or "sample"
            continue
        value = _VALUE_RE.match(line)
        if value:
            key = value.group(1).lower()
            if key == "peak":
                key = f"{section or 'true'}_peak"
            current[key] = float(value.group(2))
    results: dict[str, Loudness] = {}
    for name, values in found.items():
        if "i" not in values:
            continue
        results[name] = Loudness(
            integrated=values["i"],
            lra=values.get("lra", 0.0),
            # NaN (None in as_dict) when the run did not measure true peaks.
            true_peak=values.get("true_peak", math.nan),
        )
    return results
