"""Render outputs: filter, normalise loudness, limit true peak, encode, verify, correct.

Never ffmpeg's loudnorm (DESIGN.md, "Known pitfalls": it resamples to 192 kHz and silently
turns dynamic). Instead:

1. analyse: one decode of the trimmed, filtered input through ebur128=peak=true gives the
   integrated loudness the gain comes from and the true peak that says whether a limiter
   is needed;
2. render: one decode feeds every output (asplit); each branch applies its gain, a true-peak
   limiter only where the gained peaks would reach the ceiling, and a resampler only where
   its encoder cannot carry the input's rate. In the same ffmpeg run a loopback decoder
   (`-dec`) decodes what each encoder produced and ebur128=peak=true measures it, so the
   encoded result is verified without another pass over the file;
3. correct: an output more than 0.3 LU off target, or with a true peak over the ceiling, is
   rendered again on its own with adjusted gain and limit (at most twice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import EngineError, ParamsError
from .ffmpeg import ProgressCallback, Reporter, engine_threads, file_url
from .loudness import Loudness, parse_summaries, run_checked
from .params import FORMATS, Format, validate_params
from .probe import ProbeResult, probe

# Re-render when an encoded output misses the target by more than this (LU).
CORRECTION_TOLERANCE = 0.3
# Accept the final file within this (LU); beyond it the result carries a warning.
FINAL_TOLERANCE = 0.5
MAX_RENDERS = 3
HIGHPASS_HZ = 80
# The oversampled limiter holds true peaks to within 0.3 dB of its limit, but lossy encoders
# (band limiting, pre-echo) raise them again: the limit sits this far (dB) below the ceiling.
PEAK_MARGINS = {"mp3": 1.0, "aac": 1.0, "opus": 1.5, "flac": 0.4, "wav": 0.4}
OVERSAMPLE_BELOW = 96000
# Half swr's default: the round trip stays flat to 20 kHz at half the cost.
OVERSAMPLE_FILTER_SIZE = 16
# Share of the progress bar for pass 1 (it runs at ~400x, the render at ~150x).
ANALYSE_SHARE = 0.25
# Leave the limiter out when the gained input's true peak stays this far under its limit
# (ebur128 prints tenths of a dB).
LIMITER_GUARD = 0.2
# On a true-peak miss, lower the limit by the overshoot plus this much (dB).
PEAK_CORRECTION_EXTRA = 0.3
# A lossy encoder's overshoot on dense, limited material wobbles by +-0.6 dB from one render
# to the next; the last try aims this far (dB) under the ceiling.
LOSSY_LAST_EXTRA = 0.7
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
class _Plan:
    """One output's encoding plan and the state of its render/verify loop."""

    fmt: Format
    bitrate: int | None
    filename: str
    path: Path
    temp: Path
    rate: int | None
    resample: bool  # the encoder cannot carry the input's rate
    margin: float
    encoder_gain: float  # dB the encoder applies itself (LAME scales below 256 kbps)
    gain: float = 0.0
    limit: float | None = None  # limiter's true-peak limit before the encoder; None: no limiter
    measured: Loudness | None = None
    renders: int = 0
    # (gain, limit, integrated loudness, true peak) of every render so far.
    history: list[tuple[float, float | None, float, float]] = dataclasses.field(
        default_factory=list
    )


@dataclasses.dataclass
class _Source:
    """The input as every ffmpeg pass reads it."""

    path: str | os.PathLike[str]
    start: float
    duration: float | None  # requested trim length, None: to the end
    span: float  # seconds that will actually be read
    pre_filters: list[str]

    def input_args(self) -> list[str]:
        """Return the input options, trimming with input seeking so nothing outside is decoded."""
        args = ["-vn", "-sn", "-dn"]
        threads = engine_threads()
        if threads:
            args += ["-threads", str(threads)]
        if self.start:
            args += ["-ss", f"{self.start:.6f}"]
        if self.duration is not None:
            args += ["-t", f"{self.duration:.6f}"]
        return [*args, "-i", file_url(self.path)]

    def chain(self, *filters: str) -> str:
        """Return the input's filter chain followed by filters."""
        return ",".join([*self.pre_filters, *filters]) or "anull"


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

    input_loudness: Loudness | None = None
    outputs: list[OutputFile] = []
    try:
        if target is not None and ceiling is not None:
            input_loudness = _analyse(source, reporter.span(0.0, ANALYSE_SHARE, "analysing"))
            if input_loudness.is_silent:
                warnings.append("The input is silent; loudness was not normalised.")
                target = ceiling = None
            else:
                _plan_gain(plans, input_loudness, target, ceiling)

        encode_from = ANALYSE_SHARE if input_loudness is not None else 0.0
        encoding = reporter.span(encode_from, 0.9, "encoding")
        # Without a pass 1 the input is measured alongside the render, for the report.
        results = _render(source, plans, analyse_input=input_loudness is None, on_progress=encoding)
        input_loudness = input_loudness or results.get("input")
        for attempt in range(1, MAX_RENDERS):
            pending = [p for p in plans if _needs_correction(p, target, ceiling)]
            if not pending or target is None or ceiling is None:
                break
            last = attempt == MAX_RENDERS - 1
            for plan in pending:
                _correct(plan, target, ceiling, last=last)
            low = 0.9 + 0.035 * (attempt - 1)
            encoding = reporter.span(low, low + 0.035, "encoding")
            _render(source, pending, analyse_input=False, on_progress=encoding)

        reporter(0.97, "verifying")
        warnings += _final_check(plans, target, ceiling)
        for plan in plans:
            outputs.append(_finish(plan))
        reporter(1.0, "verifying")
    except BaseException:
        # Cancelled or failed: leave nothing behind, finished or not.
        for plan in plans:
            plan.temp.unlink(missing_ok=True)
        for output in outputs:
            output.path.unlink(missing_ok=True)
        raise

    input_stats: dict[str, Any] = input_loudness.as_dict() if input_loudness else {}
    input_stats.update(
        duration=round(info.duration, 3),
        format=info.format_name,
        codec=info.audio_codec,
        sample_rate=info.sample_rate,
        channels=info.channels,
        bit_rate=info.bit_rate,
    )
    statistics: dict[str, Any] = {
        "input": input_stats,
        "output": outputs[0].statistics,
        # What the listener gets: the encoder's own scaling included.
        "gain": round(plans[0].gain + plans[0].encoder_gain, 2) if target is not None else 0.0,
        "target": target,
        "max_peak": ceiling,
        "filtering": algorithms["filtering"],
        "limiter": plans[0].limit is not None,
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
        pre.append(f"highpass=f={HIGHPASS_HZ}")
    return _Source(path, start, duration, span, pre)


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
        filename = spec["filename"] or f"{basename}{spec['suffix']}.{fmt.extension}"
        if Path(filename).suffix.lower() != f".{fmt.extension}":
            filename = f"{filename}.{fmt.extension}"
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
        plans.append(
            _Plan(
                fmt=fmt,
                bitrate=spec["bitrate"],
                filename=filename,
                path=path,
                temp=out / f".{filename}.part",
                rate=fmt.output_rate(info.sample_rate),
                resample=fmt.output_rate(info.sample_rate) != info.sample_rate,
                margin=PEAK_MARGINS[fmt.name],
                encoder_gain=fmt.encoder_gain(spec["bitrate"]),
            )
        )
    return plans


def _analyse(source: _Source, on_progress: Callable[[float], None]) -> Loudness:
    """Measure the filtered input: loudness for the gain, true peak for the limiter (pass 1)."""
    graph = source.chain("ebur128@analyse=peak=true:framelog=quiet")
    args = [*source.input_args(), "-map", "0:a:0", "-af", graph, "-f", "null", "-"]
    lines = run_checked(args, source.path, duration=source.span, on_progress=on_progress)
    result = parse_summaries(lines).get("analyse")
    if result is None:
        raise EngineError("Loudness of the input could not be measured.")
    return result


def _plan_gain(plans: list[_Plan], measured: Loudness, target: float, ceiling: float) -> None:
    """Set each output's gain, and a limiter where the gained true peak would pass its limit."""
    for plan in plans:
        # Gain and limit act before the encoder: pre-compensate what it will take off.
        plan.gain = round(target - measured.integrated - plan.encoder_gain, 2)
        limit = _limit_for(plan, ceiling)
        if measured.true_peak + plan.gain > limit - LIMITER_GUARD:
            plan.limit = limit


def _limit_for(plan: _Plan, ceiling: float) -> float:
    """Return the limiter's first limit (dBTP before the encoder) for a ceiling."""
    return ceiling - plan.margin - plan.encoder_gain


def _render(
    source: _Source,
    plans: list[_Plan],
    *,
    analyse_input: bool,
    on_progress: Callable[[float], None],
) -> dict[str, Loudness]:
    """Encode plans in one ffmpeg run and measure each encoded stream in the same run."""
    count = len(plans)
    if count == 1:
        render = [f"[0:a:0]{source.chain(*_branch(plans[0]))}[o0]"]
    else:
        labels = "".join(f"[s{k}]" for k in range(count))
        render = [f"[0:a:0]{source.chain(f'asplit={count}')}{labels}"]
        render += [f"[s{k}]{','.join(_branch(p)) or 'anull'}[o{k}]" for k, p in enumerate(plans)]

    args = ["-y", *source.input_args()]
    threads = engine_threads()
    if threads:
        args += ["-filter_threads", str(threads)]
    args += ["-filter_complex", ";".join(render)]
    for k, plan in enumerate(plans):
        args += ["-map", f"[o{k}]", *plan.fmt.encoder_args(plan.bitrate)]
        args += ["-map_metadata", "-1", "-map_chapters", "-1"]
        if threads:
            args += ["-threads", str(threads)]
        args.append(file_url(plan.temp))

    # Every ebur128 sits in ONE graph: each prints its summary in several log calls at
    # teardown, and graphs on different threads could interleave them.
    measure = []
    if analyse_input:
        measure.append(f"[0:a:0]{source.chain('ebur128@input=peak=true:framelog=quiet')}[min]")
    for k in range(count):
        args += ["-dec", f"{k}:0"]
        measure.append(f"[dec:{k}]ebur128@out{k}=peak=true:framelog=quiet[m{k}]")
    args += ["-filter_complex", ";".join(measure)]
    if analyse_input:
        args += ["-map", "[min]"]
    for k in range(count):
        args += ["-map", f"[m{k}]"]
    args += ["-f", "null", "-"]

    lines = run_checked(args, source.path, duration=source.span, on_progress=on_progress)
    results = parse_summaries(lines)
    for k, plan in enumerate(plans):
        plan.renders += 1
        measured = results.get(f"out{k}")
        if measured is None:
            raise EngineError(f"The encoded {plan.fmt.name} output could not be measured.")
        plan.measured = measured
        plan.history.append((plan.gain, plan.limit, measured.integrated, measured.true_peak))
    return results


def _branch(plan: _Plan) -> list[str]:
    """Return one output's filters after the shared chain: gain, resample, limit."""
    filters = []
    if plan.gain:
        filters.append(f"volume={plan.gain:.2f}dB:precision=double")
    if plan.limit is not None and plan.rate:
        # alimiter limits samples, and inter-sample peaks of dense or clipped material run up
        # to 4 dB over them; limiting at twice the rate makes the limit a true-peak limit to
        # within a few tenths of a dB (4x, as the BS.1770 meter oversamples, measured no
        # closer on harsh noise and costs twice as much). Only this limiter runs oversampled,
        # only when the peaks can reach the ceiling, and the output keeps its rate.
        up = plan.rate * 2 if plan.rate < OVERSAMPLE_BELOW else None
        if up:
            filters.append(f"aresample={up}:filter_size={OVERSAMPLE_FILTER_SIZE}")
        # level=0: alimiter would otherwise normalise its output up to full scale;
        # latency=1: compensate its lookahead so outputs stay aligned with the input.
        linear = 10 ** (plan.limit / 20)
        filters.append(f"alimiter=limit={linear:.6f}:level=0:latency=1")
        if up or plan.resample:
            filters.append(f"aresample={plan.rate}:filter_size={OVERSAMPLE_FILTER_SIZE}")
    elif plan.resample:
        filters.append(f"aresample={plan.rate}")
    return filters


def _needs_correction(plan: _Plan, target: float | None, ceiling: float | None) -> bool:
    """Return True when an encoded output misses the loudness target or the peak ceiling."""
    if target is None or ceiling is None or plan.measured is None:
        return False
    off = abs(plan.measured.integrated - target) > CORRECTION_TOLERANCE
    return off or plan.measured.true_peak > ceiling


def _correct(plan: _Plan, target: float, ceiling: float, *, last: bool) -> None:
    """Adjust an output's gain and limit from what its encoded file measured."""
    measured = plan.measured
    assert measured is not None
    step = _loudness_step(plan, target)
    if plan.limit is None:
        # Unlimited peaks rise with the gain: bring the limiter in if they would pass.
        if measured.true_peak + step > ceiling - LIMITER_GUARD:
            plan.limit = _limit_for(plan, ceiling)
    elif plan.fmt.lossy and last:
        # The encoder's own overshoot (up to 3 dB on dense noise) need not shrink with the
        # limit and wobbles from render to render, but follows the level: the last try puts
        # the ceiling first, sized by the worst peak-to-gain seen in any render.
        worst = max(peak - gain for gain, _, _, peak in plan.history)
        step = min(step, ceiling - LOSSY_LAST_EXTRA - worst - plan.gain)
    elif measured.true_peak > ceiling:
        plan.limit -= measured.true_peak - ceiling + PEAK_CORRECTION_EXTRA
    plan.gain = round(plan.gain + step, 2)


def _loudness_step(plan: _Plan, target: float) -> float:
    """Return the gain change (dB) that should bring an output onto the target.

    Under heavy limiting 1 dB more gain buys well under 1 LU; once two renders with the same
    limit show how much, the step is scaled by that slope (a secant step).
    """
    assert plan.measured is not None
    step = target - plan.measured.integrated
    if len(plan.history) >= 2:
        (gain_a, limit_a, loud_a, _), (gain_b, limit_b, loud_b, _) = plan.history[-2:]
        if limit_a == limit_b and abs(gain_b - gain_a) >= 0.1:
            slope = (loud_b - loud_a) / (gain_b - gain_a)
            step /= min(1.0, max(0.25, slope))
    return step


def _final_check(plans: list[_Plan], target: float | None, ceiling: float | None) -> list[str]:
    """Raise if a true peak is still over the ceiling; return warnings for loudness misses."""
    warnings = []
    for plan in plans:
        measured = plan.measured
        if measured is None or target is None or ceiling is None:
            continue
        if measured.true_peak > ceiling:
            raise EngineError(
                f"The {plan.fmt.name} output's true peak ({measured.true_peak:.1f} dBTP) stays "
                f"above the {ceiling:.1f} dBTP ceiling after {plan.renders} renders."
            )
        if abs(measured.integrated - target) > FINAL_TOLERANCE:
            warnings.append(
                f"{plan.filename}: loudness {measured.integrated:.1f} LUFS misses the target "
                f"{target:.1f} LUFS (limiting the peaks costs loudness)."
            )
    return warnings


def _finish(plan: _Plan) -> OutputFile:
    """Move a verified output into place and describe it."""
    os.replace(plan.temp, plan.path)
    facts = probe(plan.path)
    measured = plan.measured
    assert measured is not None
    statistics = measured.as_dict()
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
