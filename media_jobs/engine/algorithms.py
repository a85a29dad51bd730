"""Filter chains of the engine's algorithms and the measurements they are tuned from.

Every algorithm is a plain ffmpeg filter chain, placed before the loudness measurement
(processing.py) so normalisation measures what will be rendered:

    aformat(dbl) -> highpass -> hum notches -> denoise -> silence cutter -> leveler

- filtering: an 80 Hz high-pass, plus notches at the mains frequency and its harmonics only
  when hum is detected (a narrow band at 50 or 60 Hz standing well above its neighbours).
  Always-on notches would cost every podcast render time and carve into male voices
  (100-180 Hz) for nothing on clean recordings.
- denoise: afftdn with a noise profile learned from the input's quietest stretch (found by the
  survey pass); afftdn's own defaults assume white noise at -50 dB and barely touch real
  room noise. afftdn delays its output by two hops and drops the tail; the chain pads and
  trims so the audio stays aligned with the input (and any video).
- silence cutter: silenceremove shortens every pause longer than silence_threshold_s to that
  length; "silence" is 30 dB under the input's loudness.
- leveler: dynaudnorm with short frames and an RMS target, so loud and quiet speakers meet
  within a second or two; frames 25 dB under the programme (pauses, breaths) keep the gain
  around them instead of being pulled up to the target.

The survey pass (only run for denoise, leveler or silence cutter, or for hum detection when
no loudness pass runs) measures the input's loudness and its momentary loudness every 100 ms.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import EngineError
from .loudness import DENORMAL_GUARD, SILENCE_LUFS, Loudness, parse_summaries, run_checked

HIGHPASS_HZ = 80
HUM_BASES = (50, 60)
# Reference bands either side of both mains frequencies, where hum has no line.
HUM_REFERENCES = (35, 75)
HUM_PROBE_RATE = 2000
HUM_PROBE_S = 120
# The probes' bandpass Q: 1.2 Hz wide at 50 Hz, so a neighbour's line leaks in 24 dB down.
HUM_PROBE_Q = 40
# A mains band this far (dB) over the louder reference band is hum.
HUM_MARGIN_DB = 12.0
HUM_HARMONICS = 6
# Narrow notches (Q 30: 1.7 Hz wide at 50 Hz) take the hum lines and leave the voice.
HUM_NOTCH_Q = 30

# The leveler's RMS target (-20 dBFS) lets loud and quiet speakers meet; 250 ms frames smoothed
# over 9 frames follow a change of speaker within about a second.
LEVELER = "dynaudnorm=f=250:g=9:p=0.95:m=20:r=0.1"
LEVELER_THRESHOLD_DB = 25.0  # under the input's loudness: pauses keep their neighbours' gain

SILENCE_UNDER_DB = 30.0  # "silence" is this far under the input's loudness (RMS over 20 ms)

DENOISE_AUTO_DB = 20.0  # automatic denoiseamount: the profile decides where it applies
DENOISE_CAP_DB = 40.0  # beyond this afftdn only adds artefacts
# afftdn's noise floor as it would learn it from the profile, raised this much (dB): slight
# over-subtraction measured best (speech kept within 0.2 LU, most noise gone).
DENOISE_FLOOR_EXTRA = 3.0
# Extra weight (dB) on the profile's lowest band (65-100 Hz): afftdn's masking model spares
# rumble under a voice's fundamental, where speech has next to nothing to lose.
DENOISE_LOW_BAND_EXTRA = 10.0
DENOISE_ADAPTIVITY = 0.3
# The stretch the noise profile is learned from: quiet for this long, and this far (LU)
# under the programme's loudness, else it is not noise but quiet programme.
NOISE_STRETCH_S = 1.0
NOISE_UNDER_LU = 10.0
# Below this the stretch is digital silence: nothing to learn a profile from.
NOISE_SILENT_LUFS = -90.0
# afftdn's profile bands: 80 Hz, then 1.5x + 5 Hz each, rounded as af_afftdn.c rounds them.
_AFFTDN_BANDS = 15

_ASTATS_RMS_RE = re.compile(
    r"\[astats@(\w+) @ [^\]]*\](?: \[\w+\])? RMS level dB:\s+(-?[\d.]+|-inf)"
)
_BAND_NOISE_RE = re.compile(r"\bbn=((?:\s*-?[\d.]+)+)")
_METADATA_TIME_RE = re.compile(r"pts_time:\s*(-?[\d.]+)")
_METADATA_M_RE = re.compile(r"lavfi\.r128\.M=(-?[\d.]+|-?inf|nan)")


@dataclasses.dataclass
class Survey:
    """What the survey pass found: loudness, a noise-only stretch, the mains hum."""

    loudness: Loudness
    noise_start: float | None = None  # seconds into the trimmed source
    noise_duration: float = 0.0
    noise_lufs: float | None = None
    hum: int | None = None


@dataclasses.dataclass
class NoiseProfile:
    """afftdn settings learned from a noise-only stretch."""

    bands: list[float]  # dB per afftdn profile band, mean removed
    floor: float  # afftdn's nf, dB

    def as_dict(self) -> dict[str, float]:
        """Return the figures for the statistics."""
        return {"noise_floor": round(self.floor, 1)}


def highpass() -> str:
    """Return the rumble filter of `filtering`."""
    return f"highpass=f={HIGHPASS_HZ}"


def hum_notches(base: int, rate: int | None) -> list[str]:
    """Return notches at base and its harmonics, below the Nyquist frequency."""
    nyquist = (rate or 44100) / 2
    return [
        f"bandreject=f={base * k}:t=q:w={HUM_NOTCH_Q}"
        for k in range(1, HUM_HARMONICS + 1)
        if base * k < nyquist * 0.9
    ]


def hum_probe(label: str) -> list[str]:
    """Return graph lines that measure the mains and reference bands of [label].

    Hum comes from the recording chain and stays for the whole file, so the first
    HUM_PROBE_S seconds tell; a mono copy at 2 kHz keeps even those cheap.
    """
    bands = [*HUM_BASES, *HUM_REFERENCES]
    outs = "".join(f"[hum{f}]" for f in bands)
    lines = [
        f"[{label}]atrim=duration={HUM_PROBE_S},aformat=channel_layouts=mono,"
        f"aresample={HUM_PROBE_RATE},"
        f"asplit={len(bands)}{outs}"
    ]
    for f in bands:
        lines.append(
            f"[hum{f}]bandpass=f={f}:t=q:w={HUM_PROBE_Q},"
            f"astats@hum{f}=measure_perchannel=none:measure_overall=RMS_level,anullsink"
        )
    return lines


def detect_hum(lines: Iterable[str]) -> int | None:
    """Return the mains frequency whose band stands out of the probe's readings, if any."""
    levels = _astats_rms(lines)
    try:
        mains = {f: levels[f"hum{f}"] for f in HUM_BASES}
        reference = max(levels[f"hum{f}"] for f in HUM_REFERENCES)
    except KeyError:
        return None
    base = max(mains, key=lambda f: mains[f])
    if not math.isfinite(mains[base]):
        return None
    if not math.isfinite(reference) or mains[base] - reference > HUM_MARGIN_DB:
        return base
    return None


def _astats_rms(lines: Iterable[str]) -> dict[str, float]:
    """Return the overall RMS level each named astats instance printed."""
    found: dict[str, float] = {}
    for line in lines:
        match = _ASTATS_RMS_RE.search(line)
        if match:
            value = match.group(2)
            found[match.group(1)] = -math.inf if value == "-inf" else float(value)
    return found


def leveler(level: Loudness | None) -> str:
    """Return the leveler for an input of the surveyed loudness."""
    if level is None or level.is_silent:
        return LEVELER
    threshold = min(1.0, 10 ** ((level.integrated - LEVELER_THRESHOLD_DB) / 20))
    return f"{LEVELER}:t={threshold:.6f}"


def silence_cutter(level: Loudness, pause: float) -> str:
    """Return silenceremove shortening pauses longer than pause seconds to that length."""
    threshold = level.integrated - SILENCE_UNDER_DB
    # silenceremove keeps stop_duration of every longer pause (plus stop_silence, here 0).
    return (
        f"silenceremove=stop_periods=-1:stop_duration={pause:.3f}:"
        f"stop_threshold={threshold:.1f}dB:stop_silence=0:detection=rms:window=0.02"
    )


def denoiser(profile: NoiseProfile, amount: float | None, rate: int) -> list[str]:
    """Return afftdn with a learned profile, padded and trimmed so the audio stays aligned."""
    reduction = DENOISE_AUTO_DB if not amount else min(amount, DENOISE_CAP_DB)
    delay = afftdn_delay(rate)
    bands = "|".join(f"{band:.2f}" for band in profile.bands)
    return [
        # Sample-count timestamps from zero, so the trim below cuts exactly the delay.
        "asetpts=N/SR/TB",
        f"apad=pad_len={delay}",
        f"afftdn=nr={reduction:g}:nf={profile.floor:.1f}:nt=c:bn={bands}:ad={DENOISE_ADAPTIVITY}",
        f"atrim=start_sample={delay}",
        "asetpts=PTS-STARTPTS",
    ]


def afftdn_delay(rate: int) -> int:
    """Return afftdn's latency in samples: window minus hop, the hop being rate/80."""
    return 2 * int(rate / 80)


def _afftdn_band_centres() -> list[int]:
    """Return afftdn's 15 profile band centres (Hz), rounded as af_afftdn.c does."""
    centres = [80]
    for _ in range(_AFFTDN_BANDS - 1):
        value = round(1.5 * centres[-1] + 5)
        if value < 1000:
            value = 10 * (value // 10)
        elif value < 5000:
            value = 50 * ((value + 20) // 50)
        elif value < 15000:
            value = 100 * ((value + 45) // 100)
        else:
            value = 1000 * ((value + 495) // 1000)
        centres.append(value)
    return centres


def profile_from(bands: list[float], rms_db: float, rate: int) -> NoiseProfile:
    """Return the afftdn profile for printed band levels and the stretch's RMS level.

    afftdn prints its learned bands with their mean removed; that mean (its noise floor) is
    what the stretch's power says once spread over the bands' shares of the spectrum:
    power = sum(share_i * 10^((bands_i + mean + 3) / 10)), af_afftdn.c's scale being
    3 dB under a full-scale white noise's per-bin power.
    """
    nyquist = rate / 2
    centres = _afftdn_band_centres()
    edges = [0.0]
    edges += [math.sqrt(a * b) for a, b in itertools.pairwise(centres)]
    edges.append(nyquist)
    edges = [min(edge, nyquist) for edge in edges]
    shares = [(high - low) / nyquist for low, high in itertools.pairwise(edges)]
    spread = sum(
        share * 10 ** ((band + 3) / 10) for share, band in zip(shares, bands, strict=False)
    )
    mean = 10 * math.log10(10 ** (rms_db / 10) / spread) if spread > 0 else -80.0
    floor = min(-20.0, max(-80.0, mean + 2.5 + DENOISE_FLOOR_EXTRA))
    shaped = list(bands)
    shaped[0] += DENOISE_LOW_BAND_EXTRA
    shaped = [min(24.0, max(-24.0, band)) for band in shaped]
    return NoiseProfile(bands=shaped, floor=floor)


def parse_band_noise(lines: Iterable[str]) -> list[float] | None:
    """Return afftdn's printed profile (bn=...), averaged over its channels."""
    profiles = []
    for line in lines:
        match = _BAND_NOISE_RE.search(line)
        if match:
            values = [float(v) for v in match.group(1).split()]
            if len(values) == _AFFTDN_BANDS:
                profiles.append(values)
    if not profiles:
        return None
    return [sum(column) / len(profiles) for column in zip(*profiles, strict=True)]


def learn_noise(
    path: str | os.PathLike[str],
    input_args: Callable[[float, float], list[str]],
    filters: list[str],
    start: float,
    duration: float,
    rate: int,
) -> NoiseProfile | None:
    """Learn afftdn's noise profile from the stretch [start, start + duration) of the input.

    input_args(start, duration) returns the options that open that stretch of the input.
    """
    # asendcmd acts on the frame a command's time falls in; demuxers hand out frames of up to
    # ~100 ms, so the stop goes in well before the stretch ends or it never arrives.
    stop = max(0.2, duration - 0.2)
    chain = ",".join(
        [
            *filters,
            "astats@noise=measure_perchannel=none:measure_overall=RMS_level",
            f"asendcmd=c='0.05 afftdn sn start;{stop:.3f} afftdn sn stop'",
            "afftdn",
        ]
    )
    args = [*input_args(start, duration), "-map", "0:a:0", "-af", chain, "-f", "null", "-"]
    lines = run_checked(args, path)
    bands = parse_band_noise(lines)
    rms = _astats_rms(lines).get("noise")
    if bands is None or rms is None or not math.isfinite(rms):
        return None
    return profile_from(bands, rms, rate)


def survey(
    path: str | os.PathLike[str],
    input_args: list[str],
    filters: list[str],
    *,
    probe_hum: bool,
    duration: float,
    on_progress: Callable[[float], None],
) -> Survey:
    """Measure the input's loudness, find its quietest stretch and (optionally) its hum.

    filters: what runs before the measurement (sample format, high-pass); the hum probe taps
    the audio before the high-pass, which would bend its bands.
    """
    handle, name = tempfile.mkstemp(prefix="engine-survey-", suffix=".txt")
    os.close(handle)
    momentary = Path(name)
    try:
        head, rest = filters[:1], filters[1:]
        # ebur128 metadata=1 cuts the audio into 100 ms frames tagged with their momentary
        # loudness; ametadata writes those to a file (a log would flood ffmpeg's stderr).
        measure = ",".join(
            [
                *rest,
                DENORMAL_GUARD,
                "ebur128@survey=metadata=1:framelog=quiet",
                f"ametadata=mode=print:key=lavfi.r128.M:file='{filter_path(momentary)}'",
            ]
        )
        graph = [f"[0:a:0]{','.join(head) or 'anull'},asplit=2[main][probe]"]
        graph.append(f"[main]{measure}[out]")
        if probe_hum:
            graph += hum_probe("probe")
        else:
            graph.append("[probe]anullsink")
        args = [*input_args, "-filter_complex", ";".join(graph), "-map", "[out]", "-f", "null", "-"]
        lines = run_checked(args, path, duration=duration, on_progress=on_progress)
        loudness = parse_summaries(lines).get("survey")
        if loudness is None:
            raise EngineError("Loudness of the input could not be measured.")
        result = Survey(loudness=loudness, hum=detect_hum(lines) if probe_hum else None)
        _find_noise(result, _read_momentary(momentary))
        return result
    finally:
        momentary.unlink(missing_ok=True)


def filter_path(path: Path) -> str:
    """Return a path quoted for a filter option (inside single quotes)."""
    text = str(path)
    if "'" in text:
        raise EngineError("The temporary directory's path cannot be used by ffmpeg.")
    return text.replace("\\", "/")


def _read_momentary(path: Path) -> list[tuple[float, float]]:
    """Return (frame start, momentary loudness) pairs from an ametadata print file."""
    series: list[tuple[float, float]] = []
    time: float | None = None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _METADATA_TIME_RE.search(line)
            if match:
                time = float(match.group(1))
                continue
            value = _METADATA_M_RE.search(line)
            if value and time is not None:
                text = value.group(1)
                number = float(text) if text not in {"nan", "inf", "-inf"} else -math.inf
                series.append((time, number))
                time = None
    return series


def _find_noise(result: Survey, series: list[tuple[float, float]]) -> None:
    """Record the quietest stretch that is neither programme nor digital silence."""
    if result.loudness.is_silent:
        return
    frames = round(NOISE_STRETCH_S / 0.1)
    ceiling = result.loudness.integrated - NOISE_UNDER_LU
    best: tuple[float, int] | None = None
    for index in range(len(series) - frames + 1):
        window = [value for _, value in series[index : index + frames]]
        loudest = max(window)
        if min(window) <= NOISE_SILENT_LUFS or loudest > ceiling:
            continue
        if best is None or loudest < best[0]:
            best = (loudest, index)
    if best is None:
        return
    loudest, index = best
    # Momentary loudness looks 400 ms back: the whole span those frames cover is quiet.
    start = max(0.0, series[index][0] + 0.1 - 0.4)
    end = series[index + frames - 1][0] + 0.1
    result.noise_start = start
    result.noise_duration = end - start
    result.noise_lufs = loudest


def is_quiet(level: Loudness | None) -> bool:
    """Return True when a level is missing or silent (no threshold can hang off it)."""
    return level is None or level.is_silent or level.integrated <= SILENCE_LUFS
