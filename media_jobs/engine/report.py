"""Detailed loudness statistics (Auphonic-style) from ebur128's per-100 ms frame log.

ebur128 with framelog=info prints one line per 100 ms of audio:

    [ebur128@r @ 0x...] [info] t: 12.3  TARGET:-23 LUFS  M: -21.4 S: -22.0  I: -23.1 LUFS ...

`FrameStats` folds those lines into maxima and a momentary-loudness histogram in constant
memory, so any pass that runs `frame_graph(name)` gets these statistics from its decode: feed
it every stderr line, then call `build_report()` with that pass's Summary. (A long
programme's render meters its outputs in stretches instead: `frames_from_blocks`.)

Estimators (documented here because the numbers reach users):

- max_momentary / max_shortterm: the largest M (400 ms window) and S (3 s window) ebur128
  printed, to its 0.1 LU resolution. Frames whose window is not yet full, or holds digital
  silence only, print -120.7 and are ignored.
- noise_level: the 10th percentile of momentary loudness over the frames whose 400 ms window
  is full. Speech pauses longer than that window read the noise floor alone; as long as they
  make up more than a tenth of the programme, the low tail of the distribution is that floor
  (a percentile, not the minimum, so one quiet instant does not decide it). Digitally silent
  frames count in the distribution at minus infinity: leading or trailing silence shorter
  than a tenth of the programme leaves the estimate on the real noise, while pauses of pure
  digital silence (a gated or edited recording) give a floor of -inf, reported as None.
  Leaving them out instead would read the pauses' edges and call a clean recording noisy.
- snr: integrated loudness minus noise_level. The integrated value is gated (-70 LUFS absolute,
  -10 LU relative), so it is the loudness of the programme's active parts, and the difference
  is the signal-to-noise ratio in dB (None, i.e. +inf, over a digitally silent floor).
  Material with no pauses (music, wall-to-wall talk) has no noise-only frames: the estimate
  then reads its quietest passages and the SNR is a lower bound.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import EngineError
from .ffmpeg import (
    FFmpegFailed,
    ProgressCallback,
    Reporter,
    describe,
    error_messages,
    ffmpeg_command,
    file_url,
    input_args,
)
from .loudness import (
    DENORMAL_GUARD,
    Loudness,
    parse_summaries,
    true_peak_factor,
    with_peak_reading,
)
from .probe import ProbeResult, probe

# ebur128 prints this (10*log10(1e-12) - 0.691) for an empty window or digital silence.
_NO_VALUE_LUFS = -120.0
NOISE_PERCENTILE = 10.0
# ebur128 prints its first momentary value once 400 ms are read (t: 0.399979); frames from
# then on that print no value hold digital silence. Half a frame of slack for the clock.
_MOMENTARY_FULL = 0.35
# Histogram resolution: ebur128 prints tenths of an LU, so nothing finer exists.
_BINS_PER_LU = 10
# Report progress at most this often (fraction of the file): frames arrive every 100 ms of audio.
_PROGRESS_STEP = 0.005
# Non-frame stderr lines kept for the Summary and error messages.
_TAIL_LINES = 1000
_INSTANCE = "report"

_FRAME_RE = re.compile(
    r"^\[(?P<filter>[^\s\]]+) @ [^\]]*\](?: \[\w+\])? t:\s*(?P<t>[\d.]+)\s.*?"
    r"\bM:\s*(?P<m>-?(?:inf|nan|[\d.]+))\s+S:\s*(?P<s>-?(?:inf|nan|[\d.]+))",
    re.IGNORECASE,
)


def frame_graph(name: str, rate: int | None) -> str:
    """Return a graph measuring input 0's audio (at rate) as ebur128@name, logging every frame.

    The true peak is read 4x oversampled as BS.1770 prescribes (loudness.peak_estimate_filters,
    which parse_summaries gives to ebur128@name): ebur128's own resamples to 192 kHz with twice
    the taps, and cost a third of a report's time. From 96 kHz on, where that chain reads the
    samples as they are, ebur128 reads it (at 192 kHz, still). The graph's output is [name].
    """
    factor = true_peak_factor(rate)
    meter = f"ebur128@{name}=framelog=info" + ("" if factor else ":peak=true")
    if factor:
        meter = with_peak_reading(name, meter, rate, factor)
    return f"[0:a:0]{DENORMAL_GUARD},{meter}[{name}]"


@dataclasses.dataclass(frozen=True)
class Frame:
    """One ebur128 frame log line: time and the momentary and short-term loudness then."""

    t: float  # seconds of audio read
    momentary: float | None  # LUFS; None while the 400 ms window fills or holds only zeros
    shortterm: float | None  # LUFS; None while the 3 s window fills or holds only zeros


def _lufs(text: str) -> float | None:
    """Return a printed loudness, or None for ebur128's "no value" readings."""
    return _level(float(text))


def _level(value: float) -> float | None:
    """Return a loudness reading, or None for ebur128's "no value" readings."""
    return value if math.isfinite(value) and value > _NO_VALUE_LUFS else None


def parse_frame_line(line: str, instance: str | None = None) -> Frame | None:
    """Return the frame a line logs, or None when it is no (or another instance's) frame line.

    instance is the name of ebur128@name; None accepts any ebur128 instance.
    """
    match = _FRAME_RE.match(line)
    if match is None:
        return None
    label = match.group("filter")
    if instance is not None and label != f"ebur128@{instance}":
        return None
    if instance is None and "ebur128" not in label:
        return None
    return Frame(float(match.group("t")), _lufs(match.group("m")), _lufs(match.group("s")))


class FrameStats:
    """Accumulate one ebur128 instance's frame lines in constant memory."""

    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance
        self.frames = 0
        self.seconds = 0.0  # audio read so far, per the last frame
        self.max_momentary: float | None = None
        self.max_shortterm: float | None = None
        self.silent_frames = 0  # full momentary window, digital silence only
        # Momentary loudness in tenths of an LU -> frame count: bounded by the meter's range,
        # whatever the programme's length.
        self._momentary: collections.Counter[int] = collections.Counter()

    def feed(self, line: str) -> bool:
        """Take one stderr line; return True if it was this instance's frame line."""
        frame = parse_frame_line(line, self.instance)
        if frame is None:
            return False
        self.add(frame)
        return True

    def add(self, frame: Frame) -> None:
        """Count one frame."""
        self.frames += 1
        self.seconds = max(self.seconds, frame.t)
        if frame.momentary is not None:
            self._momentary[round(frame.momentary * _BINS_PER_LU)] += 1
            if self.max_momentary is None or frame.momentary > self.max_momentary:
                self.max_momentary = frame.momentary
        elif frame.t >= _MOMENTARY_FULL:
            self.silent_frames += 1
        if frame.shortterm is not None and (
            self.max_shortterm is None or frame.shortterm > self.max_shortterm
        ):
            self.max_shortterm = frame.shortterm

    def momentary_percentile(self, percent: float) -> float | None:
        """Return the nearest-rank percentile of momentary loudness (LUFS).

        Digitally silent frames count as minus infinity; None when the percentile falls on
        them or there are no frames with a full window.
        """
        total = self.silent_frames + sum(self._momentary.values())
        if not total:
            return None
        rank = max(1, math.ceil(total * percent / 100))
        seen = self.silent_frames
        if seen >= rank:
            return None
        for tenths in sorted(self._momentary):
            seen += self._momentary[tenths]
            if seen >= rank:
                return tenths / _BINS_PER_LU
        return max(self._momentary) / _BINS_PER_LU  # pragma: no cover - rank <= total

    def noise_level(self) -> float | None:
        """Return the estimated noise floor (LUFS), None for digital silence or no frames."""
        return self.momentary_percentile(NOISE_PERCENTILE)


def frames_from_blocks(momentary: Iterable[float], short_term: Iterable[float]) -> FrameStats:
    """Return the statistics of a meter's full-window blocks (loudness.Blocks), not its log.

    A programme measured in stretches has every 400 ms and 3 s block it would have had in
    one run; its detailed report comes from those without decoding the file again.
    """
    stats = FrameStats()
    for value in momentary:
        stats.add(Frame(_MOMENTARY_FULL, _level(value), None))
    for value in short_term:
        # t = 0: a short-term value alone says nothing of the momentary window.
        stats.add(Frame(0.0, None, _level(value)))
    return stats


def parse_frames(lines: Iterable[str], *, instance: str | None = None) -> FrameStats:
    """Return the statistics of the frame lines in already-captured ffmpeg stderr."""
    stats = FrameStats(instance)
    for line in lines:
        stats.feed(line)
    return stats


def build_report(
    loudness: Loudness,
    frames: FrameStats,
    *,
    duration: float | None = None,
    channels: int | None = None,
    sample_rate: int | None = None,
) -> dict[str, Any]:
    """Return the Auphonic-style statistics of one measured pass as a JSON-ready dict.

    Values that do not exist (silence: nothing passed the gate, no peak) are None.
    """
    silent = loudness.is_silent
    integrated = None if silent else _finite(loudness.integrated)
    noise = frames.noise_level()
    snr = integrated - noise if integrated is not None and noise is not None else None
    return {
        "integrated": _round(integrated),
        "lra": None if silent else _round(_finite(loudness.lra)),
        "true_peak": _round(_finite(loudness.true_peak)),
        "max_momentary": _round(frames.max_momentary),
        "max_shortterm": _round(frames.max_shortterm),
        "noise_level": _round(noise),
        "snr": _round(snr),
        "duration": round(duration, 3) if duration is not None else round(frames.seconds, 3),
        "channels": channels,
        "sample_rate": sample_rate,
    }


def detailed_loudness(
    path: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    info: ProbeResult | None = None,
) -> dict[str, Any]:
    """Measure a file's first audio stream in one decode and return build_report()'s dict.

    progress(fraction, "analysing") is called as ffmpeg reads (returning False cancels);
    info (a probe of path) spares a probe.
    """
    reporter = Reporter(progress)
    reporter(0.0, "analysing")
    info = info or probe(path)
    if not info.has_audio:
        raise EngineError(f"File has no audio stream: {describe(path)}")
    frames = FrameStats(_INSTANCE)
    args = [
        *input_args(path, format_name=info.format_name),
        "-filter_complex", frame_graph(_INSTANCE, info.sample_rate), "-map", f"[{_INSTANCE}]",
        "-f", "null", "-",
    ]  # fmt: skip
    seconds = info.duration
    last = 0.0

    def on_line(line: str) -> bool:
        nonlocal last
        if not frames.feed(line):
            return False
        if seconds > 0 and frames.seconds / seconds >= last + _PROGRESS_STEP:
            last = frames.seconds / seconds
            reporter(last, "analysing")
        return True

    lines = stream_ffmpeg(args, path, on_line)
    loudness = parse_summaries(lines).get(_INSTANCE)
    if loudness is None:
        raise EngineError(f"Loudness could not be measured: no ebur128 summary ({describe(path)})")
    reporter(1.0, "analysing")
    return build_report(
        loudness,
        frames,
        duration=info.duration or frames.seconds,
        channels=info.channels,
        sample_rate=info.sample_rate,
    )


def stream_ffmpeg(
    args: Sequence[str],
    path: str | os.PathLike[str],
    on_line: Callable[[str], bool],
) -> list[str]:
    """Run ffmpeg, handing every stderr line to on_line as it arrives.

    Returns the last lines on_line did not consume (it returns True for those it did), so a
    long frame log never crowds out the Summary or the errors. An exception from on_line
    (EngineCancelled included) kills ffmpeg and propagates; a failed run raises EngineError.
    """
    cmd = [*ffmpeg_command(), *args]
    try:
        # stdout is not read, so stderr can be read here without a thread: nothing can block.
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise EngineError(f"Could not start ffmpeg ({cmd[0]}): {exc.strerror or exc}") from exc
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    stderr = proc.stderr
    if stderr is None:  # pragma: no cover - stderr=PIPE always gives one
        raise EngineError("ffmpeg's output could not be read")
    try:
        for raw in stderr:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not on_line(line):
                tail.append(line)
        returncode = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        stderr.close()
    lines = list(tail)
    if returncode != 0:
        raise ffmpeg_error(lines, path)
    return lines


def ffmpeg_error(lines: Sequence[str], path: str | os.PathLike[str]) -> EngineError:
    """Return the user-facing error for a failed ffmpeg run on path (as run_checked words it)."""
    # Messages reach users: show the file's name, not where the server keeps it.
    url, name = file_url(path), describe(path)
    full = url.removeprefix("file:")
    messages = [m.replace(url, name).replace(full, name) for m in error_messages(lines)]
    text = " ".join(messages)
    if "matches no streams" in text:
        return EngineError(f"File has no audio stream: {describe(path)}")
    if "No such file" in text:
        return EngineError(f"File not found: {describe(path)}")
    if "Invalid data" in text or "Error opening input" in text:
        return EngineError(f"File could not be decoded: {describe(path)}")
    return FFmpegFailed(messages)


def _finite(value: float | None) -> float | None:
    """Return value, or None for -inf/nan (a peak of silence, a run without true peaks)."""
    return value if value is not None and math.isfinite(value) else None


def _round(value: float | None) -> float | None:
    """Round to ebur128's printed resolution."""
    return None if value is None else round(value, 1)
