"""Measure EBU R128 loudness with ffmpeg's ebur128 filter (not loudnorm: see DESIGN.md)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EngineError
from .ffmpeg import FFmpegFailed, ProgressCallback, Reporter, describe, input_args, run_ffmpeg
from .probe import probe

if TYPE_CHECKING:  # report imports this module
    from .report import FrameStats

# ebur128 reports -70 LUFS (its absolute gate) when no block is loud enough to count.
SILENCE_LUFS = -70.0
# IIR filters (ebur128's K-weighting, a high-pass) fed digital silence decay into subnormal
# numbers, which x86 computes many times slower: a meter over a programme with pauses ran at
# half speed. adenorm adds noise at -351 dBFS, far under anything a meter resolves, and keeps
# them normal. Every ebur128 the engine runs sits behind it.
DENORMAL_GUARD = "adenorm"
# ... so a peak under this (dB) is the guard's noise alone: digital silence, -inf.
GUARD_FLOOR = -300.0

# Pass 1 needs the input's true peak only to decide: whether a limiter is needed and how deep
# it will work. ebur128's true peak (resampled to 192 kHz, 32 taps a phase) is over half the
# pass's time; oversampling 2x costs under half as much and reads speech as ebur128 does (ten
# minutes of the bench's speech-like audio: -17.60 against -17.6 dBTP): speech peaks are low
# in frequency; at worst it reads 0.7 dB under, on a tone at a quarter of the sample rate.
# Outputs are checked at 4x, as BS.1770 oversamples (processing.PEAK_CHECK_ALLOWANCE).
PEAK_ESTIMATE_TAPS = 16
# BS.1770's true-peak oversampling: outputs' checks and the job's reports read peaks at this.
TRUE_PEAK_OVERSAMPLING = 4
# ... below this rate (Hz); from it on, peak_estimate_filters reads the samples as they are.
PEAK_AS_SAMPLED_FROM = 96000
# ... in single precision, which pass 1's doubles would otherwise carry into the resampler at
# a fifth more of its cost; a peak needs no more than float's 24 bits.
PEAK_ESTIMATE_SAMPLES = "aformat=sample_fmts=fltp"
_PEAK_RE = re.compile(
    r"\[astats@pk_(\w+) @ [^\]]*\](?: \[\w+\])? Peak level dB:\s*(-?(?:inf|nan|[\d.]+))",
    re.IGNORECASE,
)
_SUMMARY_RE = re.compile(r"\[ebur128@(\w+) @ [^\]]*\](?: \[\w+\])? Summary:")
_PREFIXED_RE = re.compile(r"^\[[^\]]*\]")
_VALUE_RE = re.compile(r"^\s*(I|LRA|Peak):\s+(-?(?:inf|nan|[\d.]+))", re.IGNORECASE)


@dataclasses.dataclass
class Loudness:
    """Integrated loudness, loudness range and true peak of a programme."""

    integrated: float  # LUFS
    lra: float  # LU
    true_peak: float  # dBTP
    # A meter run in stretches keeps its blocks' statistics for the detailed report.
    frames: FrameStats | None = dataclasses.field(default=None, repr=False, compare=False)

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
        *input_args(path), "-map", "0:a:0",
        "-af", f"{DENORMAL_GUARD},ebur128@m=peak=true:framelog=quiet", "-f", "null", "-",
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
        raise explain(exc, path) from exc


def explain(failed: FFmpegFailed, path: str | os.PathLike[str]) -> EngineError:
    """Return the user-facing error for ffmpeg failing on an input file."""
    text = " ".join(failed.messages)
    if "matches no streams" in text:
        return EngineError(f"File has no audio stream: {describe(path)}")
    if "No such file" in text:
        return EngineError(f"File not found: {describe(path)}")
    if "Invalid data" in text or "Error opening input" in text:
        return EngineError(f"File could not be decoded: {describe(path)}")
    return failed


def peak_estimate_filters(name: str, rate: int | None, factor: int = 2) -> str:
    """Return a sink chain reading the true peak of what it is fed, oversampled factor times.

    It prints as astats@pk_<name>, which parse_summaries() takes as ebur128@<name>'s true
    peak; what feeds it should be denormal-guarded. Rates of 96 kHz and more are read as
    they are (see PEAK_ESTIMATE_TAPS).
    """
    stats = f"astats@pk_{name}=measure_perchannel=none:measure_overall=Peak_level,anullsink"
    if rate and rate >= PEAK_AS_SAMPLED_FROM:
        return stats
    up = f"aresample={factor * (rate or 48000)}:filter_size={PEAK_ESTIMATE_TAPS}"
    return f"{PEAK_ESTIMATE_SAMPLES},{up},{stats}"


def true_peak_factor(rate: int | None) -> int | None:
    """Return how many times peak_estimate_filters oversamples a true-peak reading at rate.

    None from PEAK_AS_SAMPLED_FROM on, where that chain would read the samples as they are:
    there ebur128 reads the true peak itself (peak=true, at 192 kHz).
    """
    return TRUE_PEAK_OVERSAMPLING if not rate or rate < PEAK_AS_SAMPLED_FROM else None


def with_peak_reading(name: str, meter: str, rate: int | None, factor: int) -> str:
    """Return meter (filters starting with ebur128@name) with the peak read beside it.

    peak_estimate_filters reads it factor times oversampled. The result holds several chains:
    it is fed through the first and leaves through the last.
    """
    side = peak_estimate_filters(name, rate, factor)
    return f"asplit=2[lm_{name}][pk_{name}];[pk_{name}]{side};[lm_{name}]{meter}"


def parse_summaries(lines: Iterable[str]) -> dict[str, Loudness]:
    """Return the Summary of every named ebur128 instance (ebur128@name) in ffmpeg's stderr.

    An instance with a peak_estimate_filters() chain of its name gets that estimate as its
    true peak, to ebur128's printed resolution.
    """
    found: dict[str, dict[str, float]] = {}
    estimates: dict[str, float] = {}
    current: dict[str, float] | None = None
    section = ""
    for line in lines:
        estimate = _PEAK_RE.search(line)
        if estimate:
            peak = _peak(float(estimate.group(2)))
            estimates[estimate.group(1)] = round(peak, 1) if math.isfinite(peak) else peak
            continue
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
            number = float(value.group(2))
            if key == "peak":
                key = f"{section or 'true'}_peak"
                number = _peak(number)
            current[key] = number
    results: dict[str, Loudness] = {}
    for name, values in found.items():
        if "i" not in values:
            continue
        if name in estimates:
            values["true_peak"] = estimates[name]
        results[name] = Loudness(
            integrated=values["i"],
            lra=values.get("lra", 0.0),
            # NaN (None in as_dict) when the run did not measure true peaks.
            true_peak=values.get("true_peak", math.nan),
        )
    return results


def _peak(value: float) -> float:
    """Return a printed peak (dB), -inf for digital silence (the guard's noise alone)."""
    return -math.inf if math.isnan(value) or value < GUARD_FLOOR else value


# Momentary blocks are 400 ms long and short-term ones 3 s, both every 100 ms (BS.1770-4,
# EBU Tech 3341): the first 3 and 29 values of a run cover less than a full window.
_STEPS_PER_MOMENTARY = 4
_STEPS_PER_SHORT_TERM = 30
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0
_LRA_RELATIVE_GATE = -20.0
_LRA_PERCENTILES = (0.10, 0.95)


@dataclasses.dataclass
class Blocks:
    """Momentary and short-term loudness values (LUFS, 100 ms apart) and the true peak.

    Measured in stretches, a programme's blocks are gathered from each stretch's meter and
    its loudness computed as one meter over the whole would (BS.1770 gating over all blocks).
    """

    momentary: array[float] = dataclasses.field(default_factory=lambda: array("d"))
    short_term: array[float] = dataclasses.field(default_factory=lambda: array("d"))
    true_peak: float = -math.inf

    def add(
        self, step: int, start: int, low: int, high: int | None, files: tuple[Path, Path]
    ) -> None:
        """Take the blocks of one meter's run whose windows end in (low, high] (samples).

        step: samples per 100 ms; start: the sample (of the programme) the meter's run began
        at; files: where its ametadata printed M and S. A block's window ends where the 100 ms
        frame carrying it ends; windows the run had not filled yet are left out.
        """
        for values, path, steps in (
            (self.momentary, files[0], _STEPS_PER_MOMENTARY),
            (self.short_term, files[1], _STEPS_PER_SHORT_TERM),
        ):
            for frame, value in read_metadata(path):
                end = start + (frame + 1) * step
                if end - start < steps * step or end <= low:
                    continue
                if high is not None and end > high:
                    continue
                values.append(value)

    def loudness(self) -> Loudness:
        """Return integrated loudness, loudness range and true peak of the blocks."""
        return Loudness(
            integrated=round(_integrated(self.momentary), 1),
            lra=round(_loudness_range(self.short_term), 1),
            true_peak=round(self.true_peak, 1),
        )


def read_metadata(path: Path) -> list[tuple[int, float]]:
    """Return (frame number, value) of every frame an ametadata print file has a value for.

    ebur128's metadata frames are 100 ms each, so the number places a value in time (pts
    would depend on the time base of whatever fed the meter).
    """
    found: list[tuple[int, float]] = []
    frame: int | None = None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("frame:"):
                match = _FRAME_RE.match(line)
                frame = int(match.group(1)) if match else None
            elif frame is not None and "=" in line:
                text = line.split("=", 1)[1].strip()
                try:
                    value = float(text)
                except ValueError:
                    continue
                found.append((frame, value if math.isfinite(value) else -math.inf))
                frame = None
    return found


_FRAME_RE = re.compile(r"frame:(\d+)")


def _power(values: Iterable[float]) -> float:
    """Return the mean of the blocks' energies as a loudness (LUFS), -inf for none."""
    total, count = 0.0, 0
    for value in values:
        total += 10 ** ((value + 0.691) / 10)
        count += 1
    return -0.691 + 10 * math.log10(total / count) if count and total > 0 else -math.inf


def _integrated(momentary: Sequence[float]) -> float:
    """Return BS.1770 integrated loudness: absolute then relative gating of the blocks."""
    gated = [value for value in momentary if value > _ABSOLUTE_GATE]
    if not gated:
        return SILENCE_LUFS
    threshold = _power(gated) + _RELATIVE_GATE
    kept = [value for value in gated if value > threshold]
    return max(SILENCE_LUFS, _power(kept)) if kept else SILENCE_LUFS


def _loudness_range(short_term: Sequence[float]) -> float:
    """Return EBU Tech 3342 loudness range: the 10th to 95th percentile of gated blocks."""
    gated = [value for value in short_term if value > _ABSOLUTE_GATE]
    if not gated:
        return 0.0
    threshold = _power(gated) + _LRA_RELATIVE_GATE
    kept = sorted(value for value in gated if value > threshold)
    if not kept:
        return 0.0
    low, high = (kept[round((len(kept) - 1) * share)] for share in _LRA_PERCENTILES)
    return high - low
