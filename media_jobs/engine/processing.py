"""Render outputs: filter, normalise loudness, limit true peak, encode, verify, correct.

Never ffmpeg's loudnorm (DESIGN.md, "Known pitfalls": it resamples to 192 kHz and silently
turns dynamic). Instead:

1. analyse: one decode of the trimmed, filtered input through ebur128 gives the integrated
   loudness the gain comes from, and a 2x-oversampled estimate of its true peak
   (loudness.PEAK_ESTIMATE_TAPS) says whether a limiter is needed and how deep it works;
2. render: one decode feeds every output (asplit); each branch applies its gain, a true-peak
   limiter only where the gained peaks would reach the ceiling, and a resampler only where
   its encoder cannot carry the input's rate. In the same ffmpeg run a loopback decoder
   (`-dec`) decodes what each encoder produced and ebur128=peak=true measures it, so the
   encoded result is verified without another pass over the file;
3. correct: an output more than 0.3 LU off target, or with a true peak over the ceiling, is
   rendered again on its own (at most twice). A lossy encoder adds its coding noise on top
   of whatever the limiter held, most over the many peaks a deep limit leaves at the limit:
   the correction takes each encoded true peak apart into what reached the encoder and the
   encoder's excursion, limits deep enough to leave room for the largest excursion seen,
   and sets the gain by a model of the loudness the limiter takes (fitted from what each
   limiter measured before its encoder, and from an unencoded probe limiter 3 dB deeper).
   The excursion wobbles from encode to encode, so a lossy output's correction encodes two
   takes (room for 1.15x and 1.6x the excursion); the best take of all renders is kept.

Long PCM/FLAC programmes (SEGMENT_MIN_S per core and more) run passes 1 and 2 on every core:
the programme is cut into one stretch per core, each measured by a process of its own (its
meter starting a few seconds early so every block it owns is whole), and the loudness taken
from all stretches' 400 ms and 3 s blocks as one meter over the whole would (loudness.Blocks).
MP3 outputs are encoded stretch by stretch on the same grid, with overlaps, and joined where
the encoders agree byte for byte (mp3join.py); other outputs are encoded whole by one more
process alongside.

The algorithms (algorithms.py: high-pass and hum notches, denoise, silence cutter, leveler)
are the shared chain in front of the gain, so pass 1 measures what the render plays. Those
that hang off the input's level (denoise's noise profile, the cutter's and leveler's
thresholds) are set up by a survey pass (pass 0) that runs only when one of them is on.
A mono_mixdown output is measured as its own downmix in pass 1 (a downmix of correlated
stereo loses 3 LU, of uncorrelated 6); a video output muxes its processed audio branch next
to the input's video stream, copied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import algorithms as algo
from . import mp3join
from .errors import EngineError, ParamsError
from .ffmpeg import (
    FFmpegFailed,
    ProgressCallback,
    Reporter,
    engine_threads,
    engine_workers,
    file_url,
    input_args,
    run_parallel,
)
from .loudness import (
    DENORMAL_GUARD,
    TRUE_PEAK_OVERSAMPLING,
    Blocks,
    Loudness,
    explain,
    parse_summaries,
    run_checked,
    true_peak_factor,
    with_peak_reading,
)
from .params import FORMATS, Format, validate_params
from .probe import ProbeResult, probe
from .report import build_report, frames_from_blocks

# Re-render when an encoded output misses the target by more than this (LU).
CORRECTION_TOLERANCE = 0.3
# Accept the final file within this (LU); beyond it the result carries a warning.
FINAL_TOLERANCE = 0.5
MAX_RENDERS = 3
HIGHPASS_HZ = algo.HIGHPASS_HZ
# The oversampled limiter holds true peaks to within 0.3 dB of its limit, but lossy encoders
# (band limiting, pre-echo) raise them again: the limit sits this far (dB) below the ceiling.
PEAK_MARGINS = {
    "mp3": 1.0, "mp3-vbr": 1.0, "aac": 1.0, "opus": 1.5, "vorbis": 1.5, "flac": 0.4,
    "alac": 0.4, "wav": 0.4, "wav-24bit": 0.4,
}  # fmt: skip
# A video output keeps the input's container and video stream; its audio codec is the one
# that container carries best: format_name (PyAV) -> (muxer, extension, audio format).
VIDEO_CONTAINERS: dict[str, tuple[str, str, str]] = {
    "mp4": ("mp4", "mp4", "aac"),
    "mov": ("mov", "mov", "aac"),
    "m4v": ("mp4", "m4v", "aac"),
    "matroska": ("matroska", "mkv", "aac"),
    "webm": ("webm", "webm", "opus"),
    "avi": ("avi", "avi", "mp3"),
    "flv": ("flv", "flv", "aac"),
    "mpegts": ("mpegts", "ts", "aac"),
}
MONO_DOWNMIX = "pan=mono|c0=0.5*c0+0.5*c1"
# Share of the analysing span the survey pass takes when it runs (it does less than pass 1).
SURVEY_SHARE = 0.4
OVERSAMPLE_BELOW = 96000
# A lossy output's first render limits at the input's rate when it limits shallow (less than
# LOSS_FIT_DEPTH): its margin (PEAK_MARGINS, 1 dB and more) leaves room for the encoder's
# excursion, which the few inter-sample overs of a shallow limit share, and the oversampling
# round trip costs a fifth of a render. Deep limits, corrections and outputs with a smaller
# margin limit oversampled.
FIRST_RENDER_MARGIN = 1.0
# Half swr's default: the round trip stays flat to 20 kHz at half the cost.
OVERSAMPLE_FILTER_SIZE = 16
# Encoded outputs are checked against the ceiling by a 4x-oversampled peak reading (as
# BS.1770 prescribes; swr, loudness.PEAK_ESTIMATE_TAPS taps a phase) at under half the cost
# of ebur128's 192 kHz one. The two read the same peaks on different grids; on the bench's
# hour the 4x reading came out up to 0.1 dB under ebur128's, so the check adds this much.
PEAK_CHECK_ALLOWANCE = 0.1
# _meter's cheaper peak readings and their oversampling: pass 1's estimate, outputs' check.
_OVERSAMPLING = {"estimate": 2, "check": TRUE_PEAK_OVERSAMPLING}
# Share of the progress bar for pass 1 (it runs at ~400x, the render at ~150x).
ANALYSE_SHARE = 0.25
# Leave the limiter out when the gained input's true peak stays this far under its limit
# (ebur128 prints tenths of a dB).
LIMITER_GUARD = 0.2
# A lossy encoder adds its coding noise to what the limiter held: on noise-like speech that
# noise sits some 12 dB under the signal, so over the many peaks a limiter leaves at its limit
# the encoded true peak lands 1-2.6 dB above it (against 0-0.6 dB on the same audio unlimited).
# The excursion adds linearly (peak + noise), follows the programme's level, and from one
# encode to the next (LAME's most) wobbles by up to 2x. A correction sizes the limit from the
# largest excursion any take measured, times a growth factor: one take per factor, of which
# the render keeps the best (the last render's, which must hold the ceiling, are larger).
EXCURSION_GROWTHS = (1.15, 1.6)
EXCURSION_GROWTHS_LAST = (1.3, 2.0)
# ... and aims this far (dB) under the ceiling.
CORRECTION_PEAK_AIM = 0.1
# A correction searches limits down to LIMIT_FLOOR (dBTP) in LIMIT_STEP steps (dB), and takes
# a predicted loudness within LOUDNESS_REACHED (LU) of the target as reaching it.
LIMIT_FLOOR = -12.0
LIMIT_STEP = 0.1
LOUDNESS_REACHED = 0.05
# The loudness a limiter takes away follows the depth D (dB by which the gained true peak
# exceeds the limit) alone, as a * D**p: on speech-like noise p is 2-3 at 2-5 dB and nearer 2
# beyond, a 0.035-0.05; sparse peaks lose less, dense noise bursts far more (p near 1). A
# limited take of a correction, or of a first render limiting LOSS_FIT_DEPTH (dB) or deeper
# (where lossy encoders overshoot most), is measured before its encoder as well (free of the
# encoder's own loudness offset, -0.4..+0.8 LU), and an output's first such render also
# measures an unencoded probe limiter LOSS_PROBE_DB deeper: two depths at least LOSS_SPREAD
# apart give a and p (within LOSS_POWERS). With one depth, a is fitted with the prior's p,
# weighed against the prior by how much ebur128's 0.1 LU rounding blurs it
# (LOSS_ROUNDING / D**p).
LOSS_PRIOR = (0.045, 2.0)
LOSS_PRIOR_SPREAD = 0.03
LOSS_ROUNDING = 0.07
LOSS_SPREAD = 1.0
LOSS_PROBE_DB = 3.0
LOSS_FIT_DEPTH = 1.0
LOSS_POWERS = (1.1, 3.0)
# A correction never limits deeper than this (dB): beyond it a limiter audibly crushes the
# programme, and missing the loudness target (with a warning) is the better result.
MAX_DEPTH = 10.0
# Long programmes are measured and (their MP3s) rendered in stretches, one process per core
# (_split): a stretch lasts at least SEGMENT_MIN_S (s), else the overlaps below cost more than
# the second core gains.
SEGMENT_MIN_S = 120.0
# A stretch's meter starts METER_LEAD_S (s) before the stretch, so even the first short-term
# (3 s) window it owns is full; what feeds the meter starts SETTLE_S earlier still, so the
# filters' start from rest stays out of the true peak, and the meter fades in over FADE_S.
METER_LEAD_S = 3.1
SETTLE_S = 0.5
FADE_S = 0.05
# Rendered stretches overlap by this much (s) before and after each boundary: LAME needs well
# under RENDER_PREROLL_S to reach the state of an encoder that has run all along (mp3join.py).
RENDER_PREROLL_S = 6.0
RENDER_POSTROLL_S = 2.0
# Encoders fed float samples that the filters left decaying towards zero (a high-pass after a
# pause, a limiter's release) compute subnormal numbers, many times slower: LAME ran at half
# speed, Vorbis at under half. 32-bit integers in front of every encoder turn those tails into
# exact zeros and change nothing audible (one step is 2^-31, -187 dBFS).
ENCODER_INPUT = "aformat=sample_fmts=s32p|s32"
_CHUNK = 1024 * 1024


@dataclasses.dataclass
class OutputFile:
    """One encoded output file and the loudness measured on it after encoding."""

    format: str
    filename: str
    path: Path
    size: int
    checksum: str  # sha256, hex
    statistics: dict[str, Any]


@dataclasses.dataclass
class ProcessResult:
    """Every output of a run and the statistics of the run."""

    outputs: list[OutputFile]
    statistics: dict[str, Any]


@dataclasses.dataclass
class _Take:
    """One encoding of an output: the gain and limit it was made with and what it measured."""

    gain: float
    limit: float | None  # the limiter's true-peak limit before the encoder; None: no limiter
    path: Path
    measured: Loudness | None = None  # the encoded file's loudness and true peak


@dataclasses.dataclass
class _Plan:
    """One output's encoding plan and the state of its render/verify loop."""

    fmt: Format
    bitrate: int | None
    filename: str
    path: Path
    temp: Path  # names the takes' working files
    rate: int | None
    resample: bool  # the encoder cannot carry the input's rate
    margin: float
    encoder_gain: float  # dB the encoder applies itself (LAME scales below 256 kbps)
    codec: Format  # the audio encoder: fmt itself, or for a video output the container's
    muxer: str
    mono: bool = False  # downmix a stereo programme to one channel
    video: bool = False  # mux next to the input's video stream (copied)
    # (gain, limit) of each take the next render encodes.
    settings: list[tuple[float, float | None]] = dataclasses.field(
        default_factory=lambda: [(0.0, None)]
    )
    source: Loudness | None = None  # what pass 1 measured of this output's programme
    renders: int = 0
    history: list[_Take] = dataclasses.field(default_factory=list)  # every measured take
    best: _Take | None = None  # the take closest to target and ceiling so far
    pending: list[_Take] = dataclasses.field(default_factory=list)  # takes being encoded
    # (depth, loudness lost) of every limiter measured before an encoder, for the loss model.
    loss_points: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    def note_loss(self, gain: float, limit: float, limited: Loudness) -> None:
        """Record what a limiter at limit took away from the programme gained by gain."""
        if self.source is not None and not limited.is_silent:
            depth = max(0.0, self.source.true_peak + gain - limit)
            self.loss_points.append((depth, self.source.integrated + gain - limited.integrated))

    def start_render(self) -> list[_Take]:
        """Return the takes of the next render, each with its own working file."""
        first = len(self.history) + 1
        self.pending = [
            _Take(gain, limit, self.temp.with_name(f"{self.temp.stem}.{first + k}.part"))
            for k, (gain, limit) in enumerate(self.settings)
        ]
        return self.pending

    def keep(self, take: _Take, target: float | None, ceiling: float | None) -> None:
        """Keep a measured take if it beats the best so far; delete the other's file."""
        self.history.append(take)
        loser: _Take | None = take
        if self.best is None or _score(take, target, ceiling) < _score(self.best, target, ceiling):
            loser, self.best = self.best, take
        if loser is not None:
            loser.path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete every working file of this output."""
        for take in [*self.pending, *([self.best] if self.best else [])]:
            take.path.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class _Segment:
    """A stretch of the programme one process measures or renders: samples [low, high)."""

    index: int
    low: int
    high: int | None  # None: to the end


@dataclasses.dataclass
class _Source:
    """The input as every ffmpeg pass reads it."""

    path: str | os.PathLike[str]
    start: float
    duration: float | None  # requested trim length, None: to the end
    span: float  # seconds that will actually be read
    pre_filters: list[str]
    rate: int | None = None
    segments: list[_Segment] | None = None  # stretches for parallel passes, None: one process
    scratch: Path | None = None  # a hidden directory in the output's for parallel passes' files
    format_name: str | None = None  # the probe's, for ffmpeg.input_args

    def scratch_dir(self, out: Path) -> Path:
        """Return (making it on first use) the directory for parallel passes' working files."""
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix=".engine-", dir=out))
        return self.scratch

    def input_args(self) -> list[str]:
        """Return the input options reading the programme (the trim window) of the input."""
        return input_args(
            self.path, format_name=self.format_name, start=self.start, duration=self.duration
        )

    def chain(self, *filters: str) -> str:
        """Return the input's filter chain followed by filters."""
        return ",".join([*self.pre_filters, *filters]) or "anull"

    def stretch_args(self, start: float, duration: float) -> list[str]:
        """Return input options reading only [start, start + duration) of the programme."""
        return input_args(
            self.path, format_name=self.format_name, start=self.start + start, duration=duration
        )

    def video_input_args(self) -> list[str]:
        """Return input options for the input's video stream, trimmed like the audio."""
        return input_args(self.path, start=self.start, duration=self.duration, video=True)


def process(
    input_path: str | os.PathLike[str],
    params: dict[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    basename: str = "output",
    progress: ProgressCallback | None = None,
) -> ProcessResult:
    """Process input_path with Auphonic-style params into out_dir and return the outputs.

    progress(fraction, stage) gets the overall fraction (never decreasing) and one of
    "analysing", "encoding", "verifying"; returning False cancels (EngineCancelled).
    """
    options = validate_params(params)
    tracks = [i for i, o in enumerate(options["output_files"]) if o["format"] == "tracks"]
    if tracks:
        raise ParamsError(
            {f"output_files[{tracks[0]}]": "tracks outputs come from a multitrack production"}
        )
    reporter = Reporter(progress)
    reporter(0.0, "analysing")
    info = probe(input_path)
    if not info.has_audio:
        raise EngineError(f"The input has no audio stream to process ({Path(input_path).name}).")
    source = _source(input_path, info, options)
    algorithms = options["algorithms"]
    target: float | None = algorithms["loudnesstarget"]
    ceiling: float | None = algorithms["maxpeak"]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = _plans(options["output_files"], info, out, _safe_basename(basename), input_path)
    warnings: list[str] = []
    applied: dict[str, Any] = {}

    input_loudness: Loudness | None = None
    outputs: list[OutputFile] = []
    try:
        analyse_end = ANALYSE_SHARE if target is not None else ANALYSE_SHARE * SURVEY_SHARE
        survey_end = analyse_end * SURVEY_SHARE if target is not None else analyse_end
        surveyed = _prepare_algorithms(
            source, info, algorithms, warnings, applied, reporter.span(0.0, survey_end, "analysing")
        )
        encode_from = survey_end if surveyed else 0.0
        source.segments = _split(source, info, algorithms)
        if target is not None and ceiling is not None:
            measured = _analyse(
                source,
                mono=any(p.mono for p in plans) and (info.channels or 1) > 1,
                probe_hum=algorithms["filtering"] and not surveyed,
                on_progress=reporter.span(encode_from, ANALYSE_SHARE, "analysing"),
                out=out,
            )
            encode_from = ANALYSE_SHARE
            input_loudness = measured["input"]
            if algorithms["filtering"] and not surveyed:
                # Found by pass 1: notch from the render on (pass 1 measured the hum, which
                # the verify step corrects for if it moved the loudness).
                _add_notches(source, measured.get("hum"), info, applied)
            if input_loudness.is_silent:
                warnings.append("The input is silent; loudness was not normalised.")
                target = ceiling = None
            else:
                _plan_gain(plans, measured, target, ceiling)

        encoding = reporter.span(encode_from, 0.9, "encoding")
        # Without a pass 1 the input is measured alongside the render, for the report.
        results = _render(
            source,
            plans,
            analyse_input=input_loudness is None,
            on_progress=encoding,
            goal=(target, ceiling),
            out=out,
        )
        input_loudness = input_loudness or results.get("input")
        for attempt in range(1, MAX_RENDERS):
            pending = [p for p in plans if _needs_correction(p, target, ceiling)]
            if not pending or target is None or ceiling is None:
                break
            last = attempt == MAX_RENDERS - 1
            for plan in pending:
                _correct(plan, target, ceiling, last=last)
            pending = [plan for plan in pending if plan.settings]
            if not pending:
                break
            low = 0.9 + 0.035 * (attempt - 1)
            encoding = reporter.span(low, low + 0.035, "encoding")
            _render(
                source,
                pending,
                analyse_input=False,
                on_progress=encoding,
                goal=(target, ceiling),
                out=out,
            )

        reporter(0.97, "verifying")
        warnings += _final_check(plans, target, ceiling)
        for plan in plans:
            outputs.append(_finish(plan))
        reporter(1.0, "verifying")
    except BaseException:
        # Cancelled or failed: leave nothing behind, finished or not.
        for plan in plans:
            plan.discard()
        for output in outputs:
            output.path.unlink(missing_ok=True)
        raise
    finally:
        if source.scratch is not None:
            shutil.rmtree(source.scratch, ignore_errors=True)

    input_stats: dict[str, Any] = input_loudness.as_dict() if input_loudness else {}
    input_stats.update(
        duration=round(info.duration, 3),
        format=info.format_name,
        codec=info.audio_codec,
        sample_rate=info.sample_rate,
        channels=info.channels,
        bit_rate=info.bit_rate,
    )
    if algorithms["silence_cutter"]:
        audio = [o for o in outputs if o.format != "video"]
        kept = audio[0].statistics["duration"] if audio else source.span
        applied["silence_cut"] = round(max(0.0, source.span - kept), 3)
    if algorithms["gate"] or algorithms["crossgate"]:
        warnings.append("gate and crossgate act between the tracks of a multitrack production.")
    chosen = plans[0].best
    assert chosen is not None
    statistics: dict[str, Any] = {
        "input": input_stats,
        "output": outputs[0].statistics,
        # What the listener gets: the encoder's own scaling included.
        "gain": round(chosen.gain + plans[0].encoder_gain, 2) if target is not None else 0.0,
        "target": target,
        "max_peak": ceiling,
        "filtering": algorithms["filtering"],
        "algorithms": applied,
        "limiter": chosen.limit is not None,
        "renders": max(plan.renders for plan in plans),
        "trim": {"start_time": source.start, "duration": round(source.span, 3)},
        "warnings": warnings,
    }
    return ProcessResult(outputs=outputs, statistics=statistics)


def _source(path: str | os.PathLike[str], info: ProbeResult, options: dict[str, Any]) -> _Source:
    """Return how to read the input: trim window and the filters before the gain."""
    start = float(options["video"]["start_time"])
    duration = options["video"]["duration"]
    if info.duration and start >= info.duration:
        raise EngineError(
            f"start_time {start:g}s is beyond the end of the input ({info.duration:.1f}s)."
        )
    span = max(0.0, info.duration - start) if info.duration else 0.0
    if duration is not None:
        span = min(span, duration) if span else duration
    # Work in doubles from the first filter: left to negotiate, highpass runs in the input's
    # s16, clipping the overshoot it adds to loud material (and skewing pass 1 by 0.7 LU).
    working = "aformat=sample_fmts=dbl"
    if (info.channels or 0) > 2:
        # MP3 carries at most two channels; downmix before measuring so the gain fits.
        working += ":channel_layouts=stereo"
    pre = [working]
    if options["algorithms"]["filtering"]:
        # Filter before measuring, so the gain is computed on what will be rendered.
        pre.append(algo.highpass())
    return _Source(
        path,
        start,
        duration,
        span,
        pre,
        rate=info.sample_rate,
        format_name=info.format_name,
    )


def _split(source: _Source, info: ProbeResult, algorithms: dict[str, Any]) -> list[_Segment] | None:
    """Return the stretches to measure and render in parallel, or None for one process.

    A stretch per worker (engine_workers: the cores), each on the 100 ms grid of the meters.
    The leveler, denoiser and silence cutter keep state over the whole programme (the cutter
    even moves its timeline), so with any of them on everything runs in one process. So does
    a compressed input: its probed duration can be an estimate, and a stretch placed by it
    could start past the real end.
    """
    rate = source.rate
    workers = engine_workers()
    codec = info.audio_codec or ""
    exact = codec.startswith("pcm_") or codec == "flac"
    if workers < 2 or not exact or not rate or rate % 10 or source.span <= 0:
        return None
    if algorithms["leveler"] or algorithms["denoise"] or algorithms["silence_cutter"]:
        return None
    count = min(workers, int(source.span // SEGMENT_MIN_S))
    if count < 2:
        return None
    step = rate // 10
    bounds = [round(source.span * rate * k / count / step) * step for k in range(count + 1)]
    return [_Segment(k, bounds[k], bounds[k + 1] if k < count - 1 else None) for k in range(count)]


def _prepare_algorithms(
    source: _Source,
    info: ProbeResult,
    algorithms: dict[str, Any],
    warnings: list[str],
    applied: dict[str, Any],
    on_progress: Callable[[float], None],
) -> bool:
    """Survey the input if an algorithm needs it and extend the source's chain.

    Returns whether the survey ran (and so, with filtering, looked for hum).
    """
    applied["filtering"] = algorithms["filtering"]
    needs_level = algorithms["leveler"] or algorithms["silence_cutter"] or algorithms["denoise"]
    lone_filtering = algorithms["filtering"] and not algorithms["normloudness"]
    if not needs_level and not lone_filtering:
        return False
    args = ["-y", *source.input_args()]
    found = algo.survey(
        source.path,
        args,
        list(source.pre_filters),
        probe_hum=algorithms["filtering"],
        duration=source.span,
        on_progress=on_progress,
    )
    if algorithms["filtering"]:
        _add_notches(source, found.hum, info, applied)
    level = None if algo.is_quiet(found.loudness) else found.loudness
    if algorithms["denoise"]:
        _add_denoiser(source, info, found, algorithms["denoiseamount"], warnings, applied)
    if algorithms["silence_cutter"]:
        if level is None:
            warnings.append("The input is silent; no pauses were cut.")
        else:
            pause = float(algorithms["silence_threshold_s"])
            source.pre_filters.append(algo.silence_cutter(level, pause))
            applied["silence_threshold_s"] = pause
    if algorithms["leveler"]:
        source.pre_filters.append(algo.leveler(level))
        applied["leveler"] = True
    return True


def _add_notches(
    source: _Source, hum: int | None, info: ProbeResult, applied: dict[str, Any]
) -> None:
    """Put hum notches right after the high-pass when hum was found."""
    applied["hum"] = hum
    if hum:
        at = 2 if len(source.pre_filters) > 1 else 1
        source.pre_filters[at:at] = algo.hum_notches(hum, info.sample_rate)


def _add_denoiser(
    source: _Source,
    info: ProbeResult,
    found: algo.Survey,
    amount: float | None,
    warnings: list[str],
    applied: dict[str, Any],
) -> None:
    """Learn the noise profile from the surveyed quiet stretch and add the denoiser."""
    rate = info.sample_rate or 44100
    profile = None
    if found.noise_start is not None:
        profile = algo.learn_noise(
            source.path,
            source.stretch_args,
            list(source.pre_filters),
            found.noise_start,
            found.noise_duration,
            rate,
        )
    if profile is None:
        warnings.append(
            "No pause quiet enough to learn the noise from was found; denoise was skipped."
        )
        applied["denoise"] = None
        return
    source.pre_filters += algo.denoiser(profile, amount, rate)
    applied["denoise"] = {
        **profile.as_dict(),
        "reduction": amount or algo.DENOISE_AUTO_DB,
        "learned_at": round(found.noise_start or 0.0, 2),
    }


def _plans(
    outputs: list[dict[str, Any]],
    info: ProbeResult,
    out: Path,
    basename: str,
    input_path: str | os.PathLike[str],
) -> list[_Plan]:
    """Return an encoding plan per output, refusing clashing or input-overwriting names."""
    plans: list[_Plan] = []
    seen: dict[str, int] = {}
    source = Path(input_path).resolve()
    for index, spec in enumerate(outputs):
        fmt = FORMATS[spec["format"]]
        codec, muxer, extension = fmt, fmt.muxer, fmt.extension
        if fmt.name == "video":
            muxer, extension, codec_name = _video_container(info, input_path)
            codec = FORMATS[codec_name]
        filename = spec["filename"] or f"{basename}{spec['suffix']}.{extension}"
        if Path(filename).suffix.lower() != f".{extension}":
            filename = f"{filename}.{extension}"
        if filename in seen:
            raise ParamsError(
                {
                    f"output_files[{index}]": f"file name {filename!r} is already used by "
                    f"output_files[{seen[filename]}]; set a filename or suffix"
                }
            )
        seen[filename] = index
        path = out / filename
        if path.resolve() == source:
            raise ParamsError({f"output_files[{index}]": "file name would overwrite the input"})
        rate = codec.output_rate(info.sample_rate)
        plans.append(
            _Plan(
                fmt=fmt,
                bitrate=spec["bitrate"],
                filename=filename,
                path=path,
                temp=out / f".{filename}.part",
                rate=rate,
                resample=rate != info.sample_rate,
                margin=PEAK_MARGINS[codec.name],
                encoder_gain=codec.encoder_gain(spec["bitrate"]),
                codec=codec,
                muxer=muxer,
                mono=bool(spec.get("mono_mixdown")) and (info.channels or 1) > 1,
                video=fmt.name == "video",
            )
        )
    return plans


def _video_container(info: ProbeResult, input_path: str | os.PathLike[str]) -> tuple[str, str, str]:
    """Return (muxer, extension, audio format) for a video output of this input."""
    if not info.has_video:
        raise EngineError(
            f"The input has no video stream to put the processed audio back into "
            f"({Path(input_path).name}); choose an audio format."
        )
    names = info.format_name.split(",")
    suffix = Path(input_path).suffix.lower().lstrip(".")
    if "mp4" in names or "mov" in names:
        key = suffix if suffix in {"mov", "m4v"} else "mp4"
    elif "matroska" in names or "webm" in names:
        key = "webm" if suffix == "webm" else "matroska"
    else:
        key = next((name for name in names if name in VIDEO_CONTAINERS), "")
    if key not in VIDEO_CONTAINERS:
        raise EngineError(
            f"A video output needs an MP4, MOV, MKV, WebM, AVI, FLV or MPEG-TS input, "
            f"not {info.format_name} ({Path(input_path).name})."
        )
    return VIDEO_CONTAINERS[key]


def _analyse(
    source: _Source,
    *,
    mono: bool,
    probe_hum: bool,
    on_progress: Callable[[float], None],
    out: Path,
) -> dict[str, Any]:
    """Measure the filtered input: loudness for the gain, true peak for the limiter (pass 1).

    Returns "input" (the programme), "mono" (its downmix, when mono) and "hum" (when probed).
    With stretches, each is measured by a process of its own and the loudness combined from
    their blocks.
    """
    segments = source.segments or [None]
    scratch = source.scratch_dir(out) if source.segments else None
    runs = [
        (_analyse_args(source, segment, mono=mono, probe_hum=probe_hum, scratch=scratch), seconds)
        for segment, seconds in zip(segments, _read_seconds(source, segments, 0.0), strict=True)
    ]
    if len(runs) == 1:
        logs = [run_checked(runs[0][0], source.path, duration=source.span, on_progress=on_progress)]
    else:
        logs = _run_all(source, runs, on_progress)
    names = ["analyse", *(["mono"] if mono else [])]
    results = _results(source, logs, names, scratch)
    found: dict[str, Any] = {"input": results.get("analyse")}
    if found["input"] is None:
        raise EngineError("Loudness of the input could not be measured.")
    if mono:
        found["mono"] = results.get("mono") or found["input"]
    if probe_hum:
        found["hum"] = algo.detect_hum(logs[0])
    return found


def _analyse_args(
    source: _Source,
    segment: _Segment | None,
    *,
    mono: bool,
    probe_hum: bool,
    scratch: Path | None,
) -> list[str]:
    """Return the ffmpeg arguments measuring the programme, or one stretch of it."""
    head, rest = source.pre_filters[:1], source.pre_filters[1:]
    skip = 0
    if segment is not None:
        assert source.rate
        lead = 0 if segment.index == 0 else round((METER_LEAD_S + SETTLE_S) * source.rate)
        head.insert(0, _trim(segment.low - lead, segment.high))
        skip = round(SETTLE_S * source.rate) if segment.index else 0
    pre = [*head, *rest]
    # Hum stays for the whole file: the first stretch's first minutes tell.
    probe_hum = probe_hum and (segment is None or segment.index == 0)
    graph: list[str] = []
    if probe_hum:
        # The probe taps the audio before the high-pass, which would bend its bands.
        graph.append(f"[0:a:0]{','.join(head) or 'anull'},asplit=2[pre][probe]")
        graph += algo.hum_probe("probe")
        chain = f"[pre]{','.join(rest) or 'anull'}"
    else:
        chain = f"[0:a:0]{','.join(pre) or 'anull'}"
    measure = _meter(source, "analyse", segment, skip, scratch, peak="estimate")
    if mono:
        graph.append(f"{chain},asplit=2[full][down]")
        graph.append(f"[full]{measure}[out]")
        down = _meter(source, "mono", segment, skip, scratch, peak="estimate")
        graph.append(f"[down]{MONO_DOWNMIX},{down},anullsink")
    else:
        graph.append(f"{chain},{measure}[out]")
    args = [*source.input_args(), "-filter_complex", ";".join(graph), "-map", "[out]"]
    return [*args, "-f", "null", "-"]


def _trim(start: int, end: int | None) -> str:
    """Return filters keeping samples [start, end) of what they are fed, timed from zero.

    (Timestamps from zero keep ffmpeg's progress, which reports output time, per stretch.)
    """
    end_at = f":end_sample={end}" if end is not None else ""
    return f"atrim=start_sample={start}{end_at},asetpts=PTS-STARTPTS"


def _meter(
    source: _Source,
    name: str,
    segment: _Segment | None,
    skip: int,
    scratch: Path | None,
    *,
    peak: str | None,
    rate: int | None = None,
) -> str:
    """Return the filters measuring a stream as ebur128@name.

    peak: "true" for ebur128's true peak, "estimate" (2x, pass 1) or "check" (4x, encoded
    outputs) for the cheaper reading of loudness.peak_estimate_filters (the filters then hold
    several chains, fed through the first and leaving through the last), None for none.
    rate is the stream's, when not the input's. For a stretch, the meter drops the first skip
    samples (its lead starts METER_LEAD_S before the stretch) and prints its
    momentary and short-term values to files, which _results gathers over all stretches.
    """
    parts = [_trim(skip, None)] if segment is not None and skip else []
    if segment is not None and segment.index:
        parts.append(f"afade=t=in:d={FADE_S}")
    parts.append(DENORMAL_GUARD)
    meter = f"ebur128@{name}=framelog=quiet" + (":peak=true" if peak == "true" else "")
    if segment is not None and scratch is not None:
        meter += ":metadata=1"
        for key, path in zip("MS", _meter_files(scratch, name, segment), strict=True):
            meter += f",ametadata=mode=print:key=lavfi.r128.{key}:file='{algo.filter_path(path)}'"
    if peak in _OVERSAMPLING:
        meter = with_peak_reading(name, meter, rate or source.rate, _OVERSAMPLING[peak])
    return ",".join([*parts, meter])


def _output_peak(plan: _Plan, source: _Source) -> str:
    """Return the peak reading (_meter's peak) of an encoded output (see PEAK_CHECK_ALLOWANCE)."""
    return "check" if true_peak_factor(plan.rate or source.rate) else "true"


def _over(measured: Loudness, ceiling: float) -> float:
    """Return how far (dB) an output's checked true peak is over the ceiling (may be < 0)."""
    return measured.true_peak + PEAK_CHECK_ALLOWANCE - ceiling


def _meter_files(scratch: Path, name: str, segment: _Segment) -> tuple[Path, Path]:
    """Return where a stretch's meter prints its momentary and short-term values."""
    return (scratch / f"{name}.{segment.index}.M.txt", scratch / f"{name}.{segment.index}.S.txt")


def _read_seconds(
    source: _Source, segments: Sequence[_Segment | None], overlap: float
) -> list[float]:
    """Return roughly how many seconds of programme each pass (or stretch) reads."""
    if segments == [None] or not source.rate:
        return [source.span]
    seconds = []
    for segment in segments:
        assert segment is not None
        high = segment.high / source.rate if segment.high is not None else source.span
        seconds.append(max(1.0, high - segment.low / source.rate + overlap))
    return seconds


def _run_all(
    source: _Source, runs: list[tuple[list[str], float]], on_progress: Callable[[float], None]
) -> list[list[str]]:
    """Run passes over the input at once, turning failures into user-facing messages."""
    try:
        return run_parallel(runs, on_progress=on_progress)
    except FFmpegFailed as failed:
        raise explain(failed, source.path) from failed


def _results(
    source: _Source, logs: list[list[str]], names: Sequence[str], scratch: Path | None
) -> dict[str, Loudness]:
    """Return what every named meter measured, over all stretches when there are several."""
    if len(logs) == 1 or source.segments is None or scratch is None:
        return parse_summaries(logs[0])
    assert source.rate
    step = source.rate // 10
    summaries = [parse_summaries(lines) for lines in logs]
    results: dict[str, Loudness] = {}
    for name in names:
        blocks = Blocks()
        peaks = []
        for segment, summary in zip(source.segments, summaries, strict=True):
            if name not in summary:
                break
            peaks.append(summary[name].true_peak)
            start = 0 if segment.index == 0 else segment.low - round(METER_LEAD_S * source.rate)
            low = segment.low if segment.index else 0
            blocks.add(step, start, low, segment.high, _meter_files(scratch, name, segment))
        else:
            # NaN: a meter without peak=true; -inf: silence.
            blocks.true_peak = math.nan if any(math.isnan(p) for p in peaks) else max(peaks)
            results[name] = blocks.loudness()
            if name.startswith("out"):
                # An output's detailed report, which a job would decode the file again for.
                results[name].frames = frames_from_blocks(blocks.momentary, blocks.short_term)
    return results


def _plan_gain(plans: list[_Plan], measured: dict[str, Any], target: float, ceiling: float) -> None:
    """Set each output's gain, and a limiter where the gained true peak would pass its limit."""
    for plan in plans:
        loudness: Loudness = measured["mono"] if plan.mono else measured["input"]
        plan.source = loudness
        # Gain and limit act before the encoder: pre-compensate what it will take off.
        gain = round(target - loudness.integrated - plan.encoder_gain, 2)
        limit: float | None = _limit_for(plan, ceiling)
        if loudness.true_peak + gain <= limit - LIMITER_GUARD:
            limit = None
        plan.settings = [(gain, limit)]


def _limit_for(plan: _Plan, ceiling: float) -> float:
    """Return the limiter's first limit (dBTP before the encoder) for a ceiling."""
    return ceiling - plan.margin - plan.encoder_gain


def _render(
    source: _Source,
    plans: list[_Plan],
    *,
    analyse_input: bool,
    on_progress: Callable[[float], None],
    goal: tuple[float | None, float | None],
    out: Path,
) -> dict[str, Loudness]:
    """Encode every take of plans and measure each encoded stream in the same run.

    With stretches (and pass 1 done), each MP3 take is encoded stretch by stretch, one
    process per stretch at once, and the stretches joined (mp3join.py); the other outputs are
    encoded whole by one more process running alongside.
    """
    split = source.segments is not None and not analyse_input
    spliced = [plan for plan in plans if split and _splices(plan, source)]
    whole = [plan for plan in plans if plan not in spliced]
    jobs = [(plan, take) for plan in [*spliced, *whole] for take in plan.start_render()]
    indexed = list(enumerate(jobs))
    probes = _probes(jobs)
    parts = [(k, plan, take) for k, (plan, take) in indexed if plan in spliced]
    rest = [(k, plan, take) for k, (plan, take) in indexed if plan not in spliced]
    runs: list[tuple[list[str], float]] = []
    scratch = source.scratch_dir(out) if spliced else None
    if spliced:
        assert source.segments is not None
        part_probes = [probe for probe in probes if probe[1] in spliced]
        overlap = RENDER_PREROLL_S + RENDER_POSTROLL_S
        seconds = _read_seconds(source, source.segments, overlap)
        for segment, reads in zip(source.segments, seconds, strict=True):
            args = _render_args(source, parts, part_probes, segment=segment, scratch=scratch)
            runs.append((args, reads))
    if rest:
        rest_probes = [probe for probe in probes if probe[1] not in spliced]
        args = _render_args(source, rest, rest_probes, analyse_input=analyse_input)
        runs.append((args, source.span))

    if len(runs) == 1 and not spliced:
        logs = [run_checked(runs[0][0], source.path, duration=source.span, on_progress=on_progress)]
    else:
        logs = _run_all(source, runs, on_progress)
    results: dict[str, Loudness] = {}
    if spliced:
        names = [f"out{k}" for k, _, _ in parts]
        names += [f"pre{k}" for k, plan, take in parts if _measures_before(plan, take)]
        names += [f"probe{j}" for j, plan, _, _ in probes if plan in spliced]
        results.update(_results(source, logs[: len(logs) - bool(rest)], names, scratch))
        assert scratch is not None
        for k, _, take in parts:
            _join(source, scratch, k, take.path)
    if rest:
        results.update(parse_summaries(logs[-1]))

    for k, (plan, take) in indexed:
        take.measured = results.get(f"out{k}")
        if take.measured is None:
            raise EngineError(f"The encoded {plan.fmt.name} output could not be measured.")
        # A lossless output's own reading is its limiter's (_measures_before).
        before = take.measured if plan.codec.samples else results.get(f"pre{k}")
        if before is not None and take.limit is not None and _measures_loss(plan, take):
            plan.note_loss(take.gain, take.limit, before)
    for j, plan, gain, limit in probes:
        probed = results.get(f"probe{j}")
        if probed is not None:
            plan.note_loss(gain, limit, probed)
    for plan in plans:
        plan.renders += 1
        # A correction can land further off than the render before (a lossy encoder's peaks
        # wobble from one encode to the next): the best take so far is the one kept.
        for take in plan.pending:
            plan.keep(take, *goal)
        plan.pending = []
    return results


def _splices(plan: _Plan, source: _Source) -> bool:
    """Return True when an output can be encoded in stretches and joined (MP3, input rate)."""
    return plan.codec.name in {"mp3", "mp3-vbr"} and not plan.video and plan.rate == source.rate


def _probes(jobs: list[tuple[_Plan, _Take]]) -> list[tuple[int, _Plan, float, float]]:
    """Return the probe limiters to run: (index, plan, gain, limit).

    A limited take is also measured before its encoder, so a correction can tell what the
    limiter cost from what the encoder did; the first limited take of an output also runs a
    probe limiter LOSS_PROBE_DB deeper, unencoded, so the cost is known at two depths.
    """
    probes: list[tuple[int, _Plan, float, float]] = []
    for plan, take in jobs:
        if not _measures_loss(plan, take) or plan.loss_points:
            continue
        if all(plan is not other for _, other, _, _ in probes):
            assert take.limit is not None
            probes.append((len(probes), plan, take.gain, take.limit - LOSS_PROBE_DB))
    return probes


def _measures_loss(plan: _Plan, take: _Take) -> bool:
    """Return True when a take's limiter is measured for the loss model (and maybe probed).

    Only in corrections, or when the first render limits deep enough (LOSS_FIT_DEPTH) that a
    lossy encoder's excursion is likely to call for one: the measures cost a decode-free but
    whole extra meter (and the probe a whole extra limiter) over the programme.
    """
    if take.limit is None or plan.source is None:
        return False
    return plan.renders > 0 or _depth(plan.source, take.gain, take.limit) >= LOSS_FIT_DEPTH


def _render_span(source: _Source, segment: _Segment) -> tuple[int, int | None, int]:
    """Return (first sample, end sample, meter skip) of a stretch's render.

    It starts RENDER_PREROLL_S early on the MP3 frame grid (so its frames line up with its
    neighbour's) and ends RENDER_POSTROLL_S late, for the join to find its cut in between.
    """
    assert source.rate
    if segment.index == 0:
        first = 0
    else:
        frame = mp3join.frame_samples(source.rate)
        first = (segment.low - round(RENDER_PREROLL_S * source.rate)) // frame * frame
    end = None if segment.high is None else segment.high + round(RENDER_POSTROLL_S * source.rate)
    skip = 0 if segment.index == 0 else segment.low - round(METER_LEAD_S * source.rate) - first
    return first, end, skip


def _part_file(scratch: Path, k: int, segment: _Segment) -> Path:
    """Return where take k's encode of a stretch goes."""
    return scratch / f"take{k}.{segment.index}.mp3"


def _join(source: _Source, scratch: Path, k: int, path: Path) -> None:
    """Join take k's encoded stretches into path."""
    assert source.segments is not None and source.rate
    frame = mp3join.frame_samples(source.rate)
    parts = []
    for segment in source.segments:
        first, _, _ = _render_span(source, segment)
        parts.append((_part_file(scratch, k, segment), first // frame))
    cuts = [segment.low // frame for segment in source.segments[1:]]
    mp3join.join(parts, cuts, path)
    for part, _ in parts:
        part.unlink(missing_ok=True)


def _render_args(
    source: _Source,
    jobs: list[tuple[int, _Plan, _Take]],
    probes: list[tuple[int, _Plan, float, float]],
    *,
    analyse_input: bool = False,
    segment: _Segment | None = None,
    scratch: Path | None = None,
) -> list[str]:
    """Return the ffmpeg arguments encoding and measuring takes, whole or one stretch.

    jobs and probes carry their indices in the whole render, which name their meters.
    """
    inline = _meters_inline(jobs, analyse_input)
    limited = [k for k, (_, plan, take) in enumerate(jobs) if _measures_before(plan, take)]
    branches: list[tuple[list[str], str]] = []
    for k, (_, plan, take) in enumerate(jobs):
        filters = [*_branch(plan, take.gain, take.limit), _encoder_input(plan)]
        labels = [f"[o{k}]", *([f"[p{k}]"] if k in limited else []), *([f"[l{k}]"] * inline)]
        if len(labels) > 1:
            filters.append(f"asplit={len(labels)}")
        branches.append((filters, "".join(labels)))
    for j, (_, plan, gain, limit) in enumerate(probes):
        branches.append((_branch(plan, gain, limit), f"[q{j}]"))
    pre = list(source.pre_filters)
    skip = 0
    if segment is not None:
        first, end, skip = _render_span(source, segment)
        pre.insert(0, _trim(first, end))
    if len(branches) == 1:
        filters, labels = branches[0]
        render = [f"[0:a:0]{','.join([*pre, *filters]) or 'anull'}{labels}"]
    else:
        split = "".join(f"[s{k}]" for k in range(len(branches)))
        render = [f"[0:a:0]{','.join([*pre, f'asplit={len(branches)}'])}{split}"]
        render += [
            f"[s{k}]{','.join(f) or 'anull'}{labels}" for k, (f, labels) in enumerate(branches)
        ]

    meters: list[tuple[str, str | None, int | None]] = [
        (f"out{index}", _output_peak(plan, source), plan.rate) for index, plan, _ in jobs
    ]
    meters += [(f"pre{jobs[k][0]}", None, None) for k in limited]
    meters += [(f"probe{j}", None, None) for j, _, _, _ in probes]
    chains = [
        _meter(source, name, segment, skip, scratch, peak=peak, rate=rate)
        for name, peak, rate in meters
    ]
    if inline:
        # Lossless outputs are measured on the samples their encoder is fed (the file's, bit
        # for bit) and probes as they leave their limiter, in the render's own graph.
        feeds = [f"[l{k}]" for k in range(len(jobs))] + [f"[q{j}]" for j in range(len(probes))]
        for k, (feed, chain) in enumerate(zip(feeds, chains, strict=True)):
            render.append(f"{feed}{chain}[m{k}]")

    args = ["-y", *source.input_args()]
    if any(plan.video for _, plan, _ in jobs):
        args += source.video_input_args()  # input 1: only its video stream is read
    threads = engine_threads()
    args += ["-filter_complex", ";".join(render)]
    for k, (index, plan, take) in enumerate(jobs):
        if plan.video:
            # Video first, as players expect; copied bit for bit.
            args += ["-map", "1:v:0", "-c:v", "copy", "-map", f"[o{k}]"]
            args += _video_audio_args(plan)
        else:
            args += ["-map", f"[o{k}]", *plan.fmt.encoder_args(plan.bitrate)]
        args += ["-map_metadata", "-1", "-map_chapters", "-1"]
        if threads:
            args += ["-threads", str(threads)]
        if segment is not None and scratch is not None:
            args.append(file_url(_part_file(scratch, index, segment)))
        else:
            args.append(file_url(take.path))
    if not inline:
        args += _loopback_meters(source, jobs, chains, limited, len(probes), analyse_input)
    if analyse_input:
        args += ["-map", "[min]"]
    for k in range(len(chains)):
        args += ["-map", f"[m{k}]"]
    return [*args, "-f", "null", "-"]


def _loopback_meters(
    source: _Source,
    jobs: list[tuple[int, _Plan, _Take]],
    chains: list[str],
    limited: list[int],
    probes: int,
    analyse_input: bool,
) -> list[str]:
    """Return the arguments decoding the outputs again and feeding each its meter chain [m<k>].

    The unencoded streams ([p<k>] before an encoder, [q<j>] a probe limiter) go through the
    same loopback as raw PCM: every ebur128 must sit in ONE graph, because each prints its
    summary in several log calls at teardown and graphs on different threads could
    interleave them.
    """
    args: list[str] = []
    # Raw PCM into the null muxer: only the loopback decoders below read these.
    for label in [f"[p{k}]" for k in limited] + [f"[q{j}]" for j in range(probes)]:
        args += ["-map", label, "-c:a", "pcm_f32le", "-f", "null", "-"]
    measure = []
    if analyse_input:
        meter = _meter(source, "input", None, 0, None, peak="true")
        measure.append(f"[0:a:0]{source.chain(meter)}[min]")
    for k, chain in enumerate(chains):
        stream = 1 if k < len(jobs) and jobs[k][1].video else 0
        args += ["-dec", f"{k}:{stream}"]
        measure.append(f"[dec:{k}]{chain}[m{k}]")
    return [*args, "-filter_complex", ";".join(measure)]


def _meters_inline(jobs: list[tuple[int, _Plan, _Take]], analyse_input: bool) -> bool:
    """Return True when a run's meters can all sit in its render graph: every output lossless.

    An encoded output is measured by decoding it again (a loopback decoder feeding a second
    graph); a run with none spares the decoders and the hand-offs between their threads.
    """
    return not analyse_input and all(plan.codec.samples and not plan.video for _, plan, _ in jobs)


def _measures_before(plan: _Plan, take: _Take) -> bool:
    """Return True when a take is also measured before its encoder (see _measures_loss).

    A lossless output's own meter reads what its encoder is fed, so it needs no second one.
    """
    return plan.codec.lossy and _measures_loss(plan, take)


def _encoder_input(plan: _Plan) -> str:
    """Return the conversion in front of an output's encoder (see ENCODER_INPUT)."""
    if plan.codec.samples:
        return f"aformat=sample_fmts={plan.codec.samples}"
    return ENCODER_INPUT


def _score(take: _Take, target: float | None, ceiling: float | None) -> tuple[float, ...]:
    """Return a sort key: the ceiling kept first, then the smaller loudness miss."""
    measured = take.measured
    if target is None or ceiling is None or measured is None:
        return (0.0,)
    over = max(0.0, round(_over(measured, ceiling), 2))
    return (over, round(abs(measured.integrated - target), 2))


def _video_audio_args(plan: _Plan) -> list[str]:
    """Return the audio encoder and muxer options of a video output."""
    codec = plan.codec
    args = [codec.codec_args[0], codec.codec_args[1]]  # -c:a <encoder>
    if plan.bitrate:
        args += ["-b:a", f"{plan.bitrate}k"]
    if plan.muxer in {"mp4", "mov"}:
        args += ["-movflags", "+faststart"]
    return [*args, "-f", plan.muxer]


def _branch(plan: _Plan, gain: float, limit: float | None) -> list[str]:
    """Return one take's filters after the shared chain: downmix, gain, resample, limit."""
    filters = [MONO_DOWNMIX] if plan.mono else []
    if gain:
        filters.append(f"volume={gain:.2f}dB:precision=double")
    if limit is not None and plan.rate:
        # alimiter limits samples, and inter-sample peaks of dense or clipped material run up
        # to 4 dB over them; limiting at twice the rate makes the limit a true-peak limit to
        # within a few tenths of a dB (4x, as the BS.1770 meter oversamples, measured no
        # closer on harsh noise and costs twice as much). Only this limiter runs oversampled,
        # only when the peaks can reach the ceiling, and the output keeps its rate.
        up = plan.rate * 2 if _oversamples(plan, gain, limit) else None
        if up:
            filters.append(f"aresample={up}:filter_size={OVERSAMPLE_FILTER_SIZE}")
        # level=0: alimiter would otherwise normalise its output up to full scale;
        # latency=1: compensate its lookahead so outputs stay aligned with the input.
        linear = 10 ** (limit / 20)
        filters.append(f"alimiter=limit={linear:.6f}:level=0:latency=1")
        if up or plan.resample:
            filters.append(f"aresample={plan.rate}:filter_size={OVERSAMPLE_FILTER_SIZE}")
    elif plan.resample:
        filters.append(f"aresample={plan.rate}")
    return filters


def _oversamples(plan: _Plan, gain: float, limit: float) -> bool:
    """Return True when a take's limiter runs at twice the rate (see FIRST_RENDER_MARGIN)."""
    if not plan.rate or plan.rate >= OVERSAMPLE_BELOW:
        return False
    if plan.renders > 0 or plan.margin < FIRST_RENDER_MARGIN or plan.source is None:
        return True
    return _depth(plan.source, gain, limit) >= LOSS_FIT_DEPTH


def _needs_correction(plan: _Plan, target: float | None, ceiling: float | None) -> bool:
    """Return True when an output's best take misses the loudness target or the ceiling."""
    if target is None or ceiling is None or plan.best is None or plan.best.measured is None:
        return False
    measured = plan.best.measured
    # ebur128 prints tenths: compare rounded, or 0.30000000000000004 counts as a miss.
    off = round(abs(measured.integrated - target), 2) > CORRECTION_TOLERANCE
    return off or _over(measured, ceiling) > 0


def _correct(plan: _Plan, target: float, ceiling: float, *, last: bool) -> None:
    """Set the takes of an output's next render from what its takes so far measured.

    Each encoded true peak is taken apart into what reached the encoder (the gained peak, or
    the limit when limited) and the encoder's excursion. For the largest excursion seen times
    a growth factor, the take is the least limiting (gain, limit) whose predicted loudness
    reaches the target and whose predicted true peak keeps under the ceiling, or the loudest
    one that keeps under it when none reaches the target. A lossy encoder's excursion
    wobbles, so a limited lossy output gets one take per factor in EXCURSION_GROWTHS: the
    render keeps whichever lands best.
    """
    source, best = plan.source, plan.best
    assert source is not None and best is not None
    excursion = max(_excursion(source, take, target) for take in plan.history)
    loss = _loss_model(plan)
    growths = EXCURSION_GROWTHS_LAST if last else EXCURSION_GROWTHS
    if not plan.codec.lossy:
        growths = growths[:1]
    # An encode is deterministic: a setting already tried would only repeat its result.
    tried = {(take.gain, take.limit) for take in plan.history}
    settings: list[tuple[float, float | None]] = []
    for growth in growths:
        setting = _choose(plan, target, ceiling, excursion * growth, loss)
        if setting not in settings and setting not in tried:
            settings.append(setting)
        if setting[1] is None:
            break  # unlimited, takes would differ only in their wobble
    plan.settings = settings


def _choose(
    plan: _Plan, target: float, ceiling: float, excursion: float, loss: _Loss
) -> tuple[float, float | None]:
    """Return the (gain, limit) predicted to land nearest target with the peaks under ceiling.

    excursion: the linear peak the encoder is expected to add at the target loudness.
    """
    source, best = plan.source, plan.best
    assert source is not None and best is not None
    aim = _linear(ceiling - CORRECTION_PEAK_AIM)
    top = (
        _limit_for(plan, ceiling)
        if best.limit is None
        else min(best.limit, _limit_for(plan, ceiling))
    )
    limits: list[float | None] = [None] if best.limit is None else []
    steps = max(0, math.floor((top - LIMIT_FLOOR) / LIMIT_STEP))
    limits += [round(top - LIMIT_STEP * k, 2) for k in range(steps + 1)]
    chosen: tuple[float, float, float | None] | None = None  # (loudness, gain, limit)
    fallback: tuple[float, float, float | None] | None = None
    for limit in limits:
        # The coding noise follows the programme's level: under a limit, the loudest the
        # output can be with limit + noise under the ceiling.
        cap = target
        if limit is not None:
            if aim <= _linear(limit):
                continue
            cap = (
                min(target, target + _db((aim - _linear(limit)) / excursion))
                if excursion
                else target
            )
        gain = _solve_gain(plan, cap, limit, loss)
        loudness = _predict(plan, gain, limit, loss)
        peak = _linear(source.true_peak + gain)
        if limit is not None:
            peak = min(peak, _linear(limit))
        if peak + excursion * _linear(loudness - target) > aim * 1.0001:
            continue
        candidate = (loudness, gain, limit)
        if loudness >= target - LOUDNESS_REACHED:
            chosen = candidate  # the least limiting that reaches the target
            break
        if fallback is None or loudness > fallback[0]:
            fallback = candidate
    pick = chosen or fallback
    if pick is None:
        # Not even the deepest limit keeps the excursion under the ceiling at any loudness
        # the model trusts: limit as deep as allowed and let the verification tell.
        return round(best.gain - 6.0, 2), LIMIT_FLOOR
    _, gain, limit = pick
    return round(gain, 2), None if limit is None else round(limit, 2)


def _excursion(source: Loudness, take: _Take, target: float) -> float:
    """Return the linear peak a take's encoder added, scaled to the target loudness."""
    measured = take.measured
    assert measured is not None
    reached = source.true_peak + take.gain
    if take.limit is not None:
        reached = min(reached, take.limit)
    added = max(0.0, _linear(measured.true_peak + PEAK_CHECK_ALLOWANCE) - _linear(reached))
    # The coding noise follows the programme's level.
    return added * _linear(target - measured.integrated)


def _linear(db: float) -> float:
    """Return the amplitude ratio of a level in dB."""
    return 10 ** (db / 20)


def _db(ratio: float) -> float:
    """Return an amplitude ratio in dB."""
    return 20 * math.log10(ratio) if ratio > 0 else -math.inf


def _depth(source: Loudness, gain: float, limit: float | None) -> float:
    """Return how far (dB) the gained true peak goes over the limit (0: not limited)."""
    return 0.0 if limit is None else max(0.0, source.true_peak + gain - limit)


@dataclasses.dataclass(frozen=True)
class _Loss:
    """The loudness a limiter takes away at a depth D: a * D**power."""

    a: float
    power: float

    def at(self, depth: float) -> float:
        """Return the loss (LU) at depth (dB)."""
        return self.a * depth**self.power if depth > 0 else 0.0

    def saturation(self) -> float:
        """Return the depth past which a dB more gain buys under a tenth of a LU."""
        if self.a <= 0:
            return math.inf
        return (0.9 / (self.a * self.power)) ** (1 / (self.power - 1))


def _loss_model(plan: _Plan) -> _Loss:
    """Return the limiter's loss model fitted to what the limiters measured so far."""
    points = sorted((depth, loss) for depth, loss in plan.loss_points if depth > 0)
    prior_a, prior_power = LOSS_PRIOR
    if not points:
        return _Loss(prior_a, prior_power)
    deep_depth, deep_loss = points[-1]
    shallow = [(d, loss) for d, loss in points if d <= deep_depth - LOSS_SPREAD and loss > 0.05]
    if shallow and deep_loss > shallow[-1][1] + 0.05:
        depth, loss = shallow[-1]
        power = math.log(deep_loss / loss) / math.log(deep_depth / depth)
        power = min(LOSS_POWERS[1], max(LOSS_POWERS[0], power))
        return _Loss(deep_loss / deep_depth**power, power)
    # One depth: fit a with the prior's power, weighed against the prior by its blur.
    scale = deep_depth**prior_power
    fitted = max(0.0, deep_loss) / scale
    weight, prior_weight = (scale / LOSS_ROUNDING) ** 2, 1 / LOSS_PRIOR_SPREAD**2
    return _Loss((fitted * weight + prior_a * prior_weight) / (weight + prior_weight), prior_power)


def _predict(plan: _Plan, gain: float, limit: float | None, loss: _Loss) -> float:
    """Return the loudness the loss model predicts for a take with gain and limit.

    It starts from the best take's measured loudness, so only the change in limiting is
    modelled (an encoder's own loudness offset carries over as measured).
    """
    source, best = plan.source, plan.best
    assert source is not None and best is not None and best.measured is not None
    before = loss.at(_depth(source, best.gain, best.limit))
    after = loss.at(_depth(source, gain, limit))
    return best.measured.integrated + gain - best.gain - (after - before)


def _solve_gain(plan: _Plan, target: float, limit: float | None, loss: _Loss) -> float:
    """Return the gain the loss model predicts brings the output onto target under limit."""
    best, source = plan.best, plan.source
    assert best is not None and source is not None
    # Past the depth where a dB more gain buys only a tenth of a LU, the model is off its data
    # and more gain mostly buys distortion: the search stops there, and at MAX_DEPTH.
    low, high = best.gain - 30.0, best.gain + 20.0
    if limit is not None:
        high = min(high, limit - source.true_peak + min(MAX_DEPTH, loss.saturation()))
    if _predict(plan, high, limit, loss) <= target:
        return high
    for _ in range(40):
        middle = (low + high) / 2
        if _predict(plan, middle, limit, loss) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _final_check(plans: list[_Plan], target: float | None, ceiling: float | None) -> list[str]:
    """Raise if a true peak is still over the ceiling; return warnings for loudness misses."""
    warnings = []
    for plan in plans:
        if plan.best is None or plan.best.measured is None or target is None or ceiling is None:
            continue
        measured = plan.best.measured
        if _over(measured, ceiling) > 0:
            raise EngineError(
                f"The {plan.fmt.name} output's true peak ({measured.true_peak:.1f} dBTP) stays "
                f"above the {ceiling:.1f} dBTP ceiling after {plan.renders} renders."
            )
        if round(abs(measured.integrated - target), 2) > FINAL_TOLERANCE:
            warnings.append(
                f"{plan.filename}: loudness {measured.integrated:.1f} LUFS misses the target "
                f"{target:.1f} LUFS (limiting the peaks costs loudness)."
            )
    return warnings


def _finish(plan: _Plan) -> OutputFile:
    """Move a verified output into place and describe it."""
    assert plan.best is not None
    os.replace(plan.best.path, plan.path)
    facts = probe(plan.path)
    measured = plan.best.measured
    assert measured is not None
    statistics = measured.as_dict()
    if measured.frames is not None:
        statistics = build_report(measured, measured.frames)
    statistics.update(
        duration=round(facts.duration, 3), sample_rate=facts.sample_rate, channels=facts.channels
    )
    digest = hashlib.sha256()
    with plan.path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return OutputFile(
        format=plan.fmt.name,
        filename=plan.filename,
        path=plan.path,
        size=plan.path.stat().st_size,
        checksum=digest.hexdigest(),
        statistics=statistics,
    )


def _safe_basename(basename: str) -> str:
    """Return basename usable as a file name stem (no separators, not hidden)."""
    cleaned = "".join("_" if ch in "/\\\x00" else ch for ch in str(basename)).strip().lstrip(".")
    return cleaned or "output"
