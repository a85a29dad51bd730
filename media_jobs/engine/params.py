"""Processing parameters (Auphonic's names) and the output formats the engine can write."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ParamsError

TARGET_MIN, TARGET_MAX = -31.0, -13.0
MAXPEAK_MIN = -10.0
DEFAULT_TARGET = -16.0

_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


@dataclasses.dataclass(frozen=True)
class Format:
    """How to encode one output format with ffmpeg."""

    name: str
    extension: str
    muxer: str
    codec_args: tuple[str, ...]
    lossy: bool
    default_bitrate: int | None = None  # kbps; None for lossless formats
    bitrate_range: tuple[int, int] | None = None
    sample_rates: tuple[int, ...] | None = None  # None: any rate
    vbr: bool = False  # bitrate is a hint for a quality level
    # A lossless format's stored sample format: the graph converts to it before the encoder,
    # so what a meter reads there is what the file holds (processing._meters_inline).
    samples: str | None = None

    def output_rate(self, rate: int | None) -> int | None:
        """Return the input's rate when this format can carry it, else the nearest it can."""
        if rate is None or self.sample_rates is None or rate in self.sample_rates:
            return rate
        higher = [r for r in self.sample_rates if r >= rate]
        return min(higher) if higher else max(self.sample_rates)

    def encoder_gain(self, bitrate: int | None) -> float:
        """Return the level change (dB) the encoder itself applies at bitrate."""
        return _lame_gain(bitrate, self.vbr) if self.name in ("mp3", "mp3-vbr") else 0.0

    def encoder_args(self, bitrate: int | None) -> list[str]:
        """Return ffmpeg output options for this format at bitrate kbps."""
        args = list(self.codec_args)
        if self.vbr:
            args += ["-q:a", str(lame_vbr_quality(bitrate))]
        elif self.lossy and bitrate:
            args += ["-b:a", f"{bitrate}k"]
        return [*args, "-f", self.muxer]


# What an MP3 encode does to integrated loudness, measured with this ffmpeg's libmp3lame on
# speech at 64-320 kbps: CBR comes out 0.2 LU quieter, VBR within 0.1. (LAME's 0.95 input scale
# in presets.c belongs to its ABR presets, which ffmpeg's CBR and -q:a modes never apply.)
_LAME_CBR_GAIN = -0.2


def _lame_gain(bitrate: int | None, vbr: bool = False) -> float:
    """Return the loudness change (dB) LAME's encode brings at bitrate."""
    return 0.0 if vbr else _LAME_CBR_GAIN


# LAME's VBR quality levels (-q:a / -V) and the average bitrate each gives on speech and music
# (LAME's own table): a bitrate hint picks the nearest level.
_LAME_VBR = (
    (0, 245), (1, 225), (2, 190), (3, 175), (4, 165), (5, 130), (6, 115), (7, 100), (8, 85),
    (9, 65),
)  # fmt: skip


def lame_vbr_quality(bitrate: int | None) -> int:
    """Return LAME's VBR quality level (0 best .. 9) closest to a bitrate hint in kbps."""
    kbps = bitrate or 130
    return min(_LAME_VBR, key=lambda row: abs(row[1] - kbps))[0]


FORMATS: dict[str, Format] = {
    "mp3": Format(
        name="mp3",
        extension="mp3",
        muxer="mp3",
        codec_args=("-c:a", "libmp3lame"),
        lossy=True,
        default_bitrate=128,
        bitrate_range=(8, 320),
        sample_rates=_MP3_RATES,
    ),
    "mp3-vbr": Format(
        name="mp3-vbr",
        extension="mp3",
        muxer="mp3",
        codec_args=("-c:a", "libmp3lame"),
        lossy=True,
        # A hint: LAME's VBR picks the bitrate; the hint only chooses the quality level.
        default_bitrate=130,
        bitrate_range=(32, 320),
        sample_rates=_MP3_RATES,
        vbr=True,
    ),
    "vorbis": Format(
        name="vorbis",
        extension="ogg",
        muxer="ogg",
        codec_args=("-c:a", "libvorbis"),
        lossy=True,
        default_bitrate=112,
        bitrate_range=(32, 500),
    ),
    "opus": Format(
        name="opus",
        extension="opus",
        muxer="opus",
        codec_args=("-c:a", "libopus"),
        lossy=True,
        default_bitrate=64,
        bitrate_range=(6, 510),
        # Opus always decodes at 48 kHz; resample in our chain rather than in libopus.
        sample_rates=(48000,),
    ),
    "aac": Format(
        name="aac",
        extension="m4a",
        muxer="ipod",
        # faststart puts the index first so players can start before the download ends.
        codec_args=("-c:a", "aac", "-movflags", "+faststart"),
        lossy=True,
        default_bitrate=128,
        bitrate_range=(16, 512),
        sample_rates=_AAC_RATES,
    ),
    "flac": Format(
        name="flac",
        extension="flac",
        muxer="flac",
        # 16-bit like Auphonic's flac/wav; without this flac would pick 24-bit from our floats.
        codec_args=("-c:a", "flac", "-sample_fmt", "s16"),
        lossy=False,
        samples="s16",
    ),
    "alac": Format(
        name="alac",
        extension="m4a",
        muxer="ipod",
        codec_args=("-c:a", "alac", "-sample_fmt", "s16p", "-movflags", "+faststart"),
        lossy=False,
        samples="s16p",
    ),
    "wav": Format(
        name="wav",
        extension="wav",
        muxer="wav",
        # rf64 only kicks in past 4 GiB, where plain RIFF sizes overflow.
        codec_args=("-c:a", "pcm_s16le", "-rf64", "auto"),
        lossy=False,
        samples="s16",
    ),
    "wav-24bit": Format(
        name="wav-24bit",
        extension="wav",
        muxer="wav",
        codec_args=("-c:a", "pcm_s24le", "-rf64", "auto"),
        lossy=False,
        # pcm_s24le keeps the top 24 bits: the meter reads the 8 it drops too (under -138 dB).
        samples="s32",
    ),
    # The processed audio muxed back into the input's own container, its video stream copied;
    # processing.VIDEO_CONTAINERS picks the muxer and audio codec from the input.
    "video": Format(
        name="video",
        extension="",
        muxer="",
        codec_args=(),
        lossy=True,
        default_bitrate=160,
        bitrate_range=(32, 512),
    ),
}
# Multitrack only: the processed tracks zipped (engine/multitrack.py writes them).
TRACK_ENDINGS = ("wav.zip", "flac.zip")

_ALGORITHM_FLAGS = (
    "filtering", "leveler", "normloudness", "denoise", "silence_cutter", "gate", "crossgate",
)  # fmt: skip
_ALGORITHM_KEYS = {
    *_ALGORITHM_FLAGS, "hipfilter", "loudnesstarget", "maxpeak", "denoiseamount",
    "denoisemethod", "silence_threshold_s",
}  # fmt: skip
# Auphonic algorithms that need speech or music models this engine does not ship: refused
# when switched on, never silently skipped.
_MODEL_ALGORITHMS = {"filler_cutter", "cough_cutter", "music_cutter", "speech_isolation"}
# Auphonic algorithms this engine does not implement: accepted only when switched off.
_UNSUPPORTED_TOGGLES = {"autolevel", "dehum", "debreath", "deverb"}
# Settings of algorithms the engine leaves out or tunes itself: Auphonic presets carry them,
# so they are accepted and have no effect.
_IGNORED_SETTINGS = {
    "dehumamount", "dehumbase", "deverbamount", "debreathamount", "levelerstrength",
    "compressor", "musicgain", "backforeground", "bgreduction", "gatestrength",
    "loudnessmethod",
}  # fmt: skip
# Auphonic's denoise methods: one denoiser here (afftdn with a measured noise profile).
DENOISE_METHODS = ("classic", "static", "dynamic")
DENOISE_MAX = 100.0  # dB; Auphonic's "100" means full reduction, capped by the engine
SILENCE_THRESHOLD_DEFAULT = 1.0  # s
SILENCE_THRESHOLD_RANGE = (0.3, 10.0)
_OUTPUT_KEYS = {"format", "bitrate", "filename", "suffix", "mono_mixdown", "ending"}
_VIDEO_KEYS = {"start_time", "duration"}
# Top-level keys other engine modules and providers own (tags, chapters, multitrack,
# transcripts): returned exactly as given.
PASS_THROUGH_KEYS = (
    "metadata", "chapters", "append_chapters", "multi_input_files", "is_multitrack",
    "speech_recognition", "tracks",
)  # fmt: skip
_TOP_KEYS = {"algorithms", "output_files", "video", *PASS_THROUGH_KEYS}


def auto_maxpeak(target: float) -> float:
    """Return the default true-peak ceiling for a loudness target (Auphonic's rule)."""
    return -1.0 if target >= -18 else -2.0


def validate_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Return normalised parameters or raise ParamsError naming every bad key.

    The normalised form (every key always present):
    algorithms: filtering, leveler, normloudness, loudnesstarget, maxpeak, denoise,
    denoiseamount, silence_cutter, silence_threshold_s, gate, crossgate (see validate_algorithms);
    output_files: [{format, bitrate, filename, suffix, mono_mixdown}] ("tracks" entries carry
    format and ending only); video: {start_time, duration}; metadata (as given, default {}),
    and chapters, append_chapters, multi_input_files, is_multitrack, speech_recognition,
    tracks as given when present.
    """
    errors: dict[str, str] = {}
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ParamsError({"params": "must be an object"})
    for key in sorted(set(params) - _TOP_KEYS):
        errors[key] = "unknown parameter"

    section = _section(params, "algorithms", errors)
    algorithms = validate_algorithms(section, errors)
    outputs = _outputs(params.get("output_files"), errors)
    if algorithms["silence_cutter"] and any(o["format"] == "video" for o in outputs):
        errors["algorithms.silence_cutter"] = (
            "the silence cutter shortens the audio, so it cannot go back into the video; "
            "switch it off or drop the video output"
        )
    video = _video(_section(params, "video", errors), errors)
    if errors:
        raise ParamsError(errors)
    result: dict[str, Any] = {
        "algorithms": algorithms,
        "output_files": outputs,
        "video": video,
        "metadata": params.get("metadata") if params.get("metadata") is not None else {},
    }
    for key in PASS_THROUGH_KEYS:
        if key in params and key != "metadata":
            result[key] = params[key]
    return result


def validate_algorithms(
    section: dict[str, Any], errors: dict[str, str], *, where: str = "algorithms"
) -> dict[str, Any]:
    """Validate an algorithms object (top level, or one track's), recording errors by key.

    Returns filtering, leveler, normloudness, loudnesstarget and maxpeak (None unless
    normloudness; maxpeak 0 or missing means automatic), denoise and denoiseamount (dB of
    reduction, 0 = automatic; None unless denoise), silence_cutter and silence_threshold_s
    (pauses longer than this are shortened to it; None unless silence_cutter), gate, crossgate
    (multitrack only: a single track has no other tracks to gate against).
    """
    known = _ALGORITHM_KEYS | _IGNORED_SETTINGS
    for key in sorted(set(section) - known):
        label = f"{where}.{key}"
        if key in _MODEL_ALGORITHMS:
            if as_flag(section[key], label, errors):
                errors[label] = (
                    f"{key} needs a speech model the built-in engine does not ship; "
                    "use the auphonic provider"
                )
        elif key in _UNSUPPORTED_TOGGLES:
            if as_flag(section[key], label, errors):
                errors[label] = "not supported by the built-in engine; switch it off"
        else:
            errors[label] = "unknown algorithm"

    flags = {key: as_flag(section.get(key), f"{where}.{key}", errors) for key in _ALGORITHM_FLAGS}
    # Auphonic renamed hipfilter to filtering; accept either (providers.md).
    if section.get("filtering") is None and section.get("hipfilter") is not None:
        flags["filtering"] = as_flag(section["hipfilter"], f"{where}.filtering", errors)

    target = as_number(section.get("loudnesstarget"), f"{where}.loudnesstarget", errors)
    if target is not None and not TARGET_MIN <= target <= TARGET_MAX:
        errors[f"{where}.loudnesstarget"] = (
            f"must be between {TARGET_MIN:g} and {TARGET_MAX:g} LUFS, got {target:g}"
        )
    maxpeak = as_number(section.get("maxpeak"), f"{where}.maxpeak", errors)
    if maxpeak is not None and not MAXPEAK_MIN <= maxpeak <= 0:
        errors[f"{where}.maxpeak"] = (
            f"must be between {MAXPEAK_MIN:g} and 0 dBTP (0 = automatic), got {maxpeak:g}"
        )
    if flags["normloudness"]:
        target = DEFAULT_TARGET if target is None else target
        if not maxpeak:  # missing or 0: automatic
            maxpeak = auto_maxpeak(target)
    else:
        target = maxpeak = None

    amount = as_number(section.get("denoiseamount"), f"{where}.denoiseamount", errors)
    if amount is not None and not 0 <= amount <= DENOISE_MAX:
        errors[f"{where}.denoiseamount"] = (
            f"must be between 0 (automatic) and {DENOISE_MAX:g} dB, got {amount:g}"
        )
    method = section.get("denoisemethod")
    if method not in (None, "") and method not in DENOISE_METHODS:
        if method == "speech_isolation":
            errors[f"{where}.denoisemethod"] = (
                "speech_isolation needs a speech model the built-in engine does not ship; "
                "use the auphonic provider"
            )
        else:
            choices = ", ".join(DENOISE_METHODS)
            errors[f"{where}.denoisemethod"] = f"must be one of {choices}, got {method!r}"

    pause = as_number(section.get("silence_threshold_s"), f"{where}.silence_threshold_s", errors)
    low, high = SILENCE_THRESHOLD_RANGE
    if pause is not None and not low <= pause <= high:
        errors[f"{where}.silence_threshold_s"] = (
            f"must be between {low:g} and {high:g} seconds, got {pause:g}"
        )
    if flags["silence_cutter"] and pause is None:
        pause = SILENCE_THRESHOLD_DEFAULT

    return {
        "filtering": flags["filtering"],
        "leveler": flags["leveler"],
        "normloudness": flags["normloudness"],
        "loudnesstarget": target,
        "maxpeak": maxpeak,
        "denoise": flags["denoise"],
        "denoiseamount": (amount or 0.0) if flags["denoise"] else None,
        "silence_cutter": flags["silence_cutter"],
        "silence_threshold_s": pause if flags["silence_cutter"] else None,
        "gate": flags["gate"],
        "crossgate": flags["crossgate"],
    }


def _section(params: dict[str, Any], key: str, errors: dict[str, str]) -> dict[str, Any]:
    """Return params[key] as a dict, recording an error if it is something else."""
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors[key] = "must be an object"
        return {}
    return value


def _outputs(value: Any, errors: dict[str, str]) -> list[dict[str, Any]]:
    """Validate output_files; default to one MP3 when absent."""
    if value is None:
        value = [{"format": "mp3"}]
    if not isinstance(value, list) or not value:
        errors["output_files"] = "must be a non-empty list of output files"
        return []
    result: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"output_files[{index}]"
        if not isinstance(item, dict):
            errors[where] = "must be an object"
            continue
        name = item.get("format")
        if isinstance(name, str) and name.lower() == "tracks":
            result.append(_tracks_output(item, where, errors))
            continue
        for key in sorted(set(item) - _OUTPUT_KEYS):
            errors[f"{where}.{key}"] = "unknown option"
        if "ending" in item:
            errors[f"{where}.ending"] = 'only {"format": "tracks"} outputs take an ending'
        fmt = FORMATS.get(name.lower()) if isinstance(name, str) else None
        if fmt is None:
            choices = ", ".join([*FORMATS, "tracks"])
            errors[f"{where}.format"] = f"unsupported format {name!r} (choose from {choices})"
            continue
        mono = as_flag(item.get("mono_mixdown"), f"{where}.mono_mixdown", errors)
        bitrate = None
        if fmt.lossy:
            bitrate = as_number(item.get("bitrate"), f"{where}.bitrate", errors)
            bitrate = fmt.default_bitrate if bitrate is None else bitrate
            low, high = fmt.bitrate_range or (0, 0)
            if bitrate is not None and not (low <= bitrate <= high and bitrate == int(bitrate)):
                errors[f"{where}.bitrate"] = (
                    f"must be a whole number of kbps between {low} and {high} for {fmt.name}"
                )
            bitrate = int(bitrate) if bitrate is not None else None
        filename = _name(item.get("filename"), f"{where}.filename", errors)
        suffix = _name(item.get("suffix"), f"{where}.suffix", errors, leading_dot=True)
        result.append(
            {
                "format": fmt.name,
                "bitrate": bitrate,
                "filename": filename,
                "suffix": suffix or "",
                "mono_mixdown": mono,
            }
        )
    return result


def _tracks_output(item: dict[str, Any], where: str, errors: dict[str, str]) -> dict[str, Any]:
    """Validate a multitrack {"format": "tracks", "ending": "wav.zip"} output's shape."""
    for key in sorted(set(item) - {"format", "ending"}):
        errors[f"{where}.{key}"] = "unknown option for tracks"
    ending = item.get("ending", TRACK_ENDINGS[0])
    if not isinstance(ending, str) or ending.lower().lstrip(".") not in TRACK_ENDINGS:
        choices = " or ".join(TRACK_ENDINGS)
        errors[f"{where}.ending"] = f"tracks come as {choices}, got {ending!r}"
        ending = TRACK_ENDINGS[0]
    return {"format": "tracks", "ending": ending.lower().lstrip(".")}


def _video(section: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """Validate the trim window (seconds), as ApyHub's extract-audio job takes it."""
    for key in sorted(set(section) - _VIDEO_KEYS):
        errors[f"video.{key}"] = "unknown option"
    start = as_number(section.get("start_time"), "video.start_time", errors) or 0.0
    if start < 0:
        errors["video.start_time"] = "must be zero or more seconds"
    duration = as_number(section.get("duration"), "video.duration", errors)
    if duration is not None and duration <= 0:
        errors["video.duration"] = "must be more than zero seconds"
    return {"start_time": start, "duration": duration}


def as_flag(value: Any, where: str, errors: dict[str, str]) -> bool:
    """Return a boolean from JSON or form input ("true"/"false"/"1"/"0")."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", ""}:
        return value.strip().lower() in {"true", "1"}
    errors[where] = f"must be true or false, got {value!r}"
    return False


def as_number(value: Any, where: str, errors: dict[str, str]) -> float | None:
    """Return a finite float from a number or numeric string (Auphonic sends "128")."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        errors[where] = f"must be a number, got {value!r}"
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        errors[where] = f"must be a number, got {value!r}"
        return None
    if not math.isfinite(number):
        errors[where] = f"must be a finite number, got {value!r}"
        return None
    return number


def _name(
    value: Any, where: str, errors: dict[str, str], *, leading_dot: bool = False
) -> str | None:
    """Return a file name (or suffix) that cannot escape the output directory."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors[where] = "must be a string"
        return None
    bad = (
        "/" in value
        or "\\" in value
        or "\x00" in value
        or (value.startswith(".") and not leading_dot)
        or value in {".", ".."}
        or len(value) > 200
        or value != value.strip()
    )
    if bad:
        errors[where] = f"must be a plain file name without path separators, got {value!r}"
        return None
    return value
