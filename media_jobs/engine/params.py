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

    def output_rate(self, rate: int | None) -> int | None:
        """Return the input's rate when this format can carry it, else the nearest it can."""
        if rate is None or self.sample_rates is None or rate in self.sample_rates:
            return rate
        higher = [r for r in self.sample_rates if r >= rate]
        return min(higher) if higher else max(self.sample_rates)

    def encoder_gain(self, bitrate: int | None) -> float:
        """Return the level change (dB) the encoder itself applies at bitrate."""
        return _lame_gain(bitrate) if self.name == "mp3" else 0.0

    def encoder_args(self, bitrate: int | None) -> list[str]:
        """Return ffmpeg output options for this format at bitrate kbps."""
        args = list(self.codec_args)
        if self.lossy and bitrate:
            args += ["-b:a", f"{bitrate}k"]
        return [*args, "-f", self.muxer]


# LAME scales its input down at bitrates up to 224 kbps ("ABR seems to have big problems with
# clipping", lame/libmp3lame/presets.c, abr_switch_map), CBR included: 0.95 (-0.45 dB) up to
# 160 kbps, so a 128k MP3 comes out 0.45 LU under target unless we compensate.
_LAME_SCALES = (
    (8, 0.95), (16, 0.95), (24, 0.95), (32, 0.95), (40, 0.95), (48, 0.95), (56, 0.95),
    (64, 0.95), (80, 0.95), (96, 0.95), (112, 0.95), (128, 0.95), (160, 0.95), (192, 0.97),
    (224, 0.98), (256, 1.0), (320, 1.0),
)  # fmt: skip


def _lame_gain(bitrate: int | None) -> float:
    """Return LAME's own gain (dB) at bitrate, picking its table row as it does (ties go up)."""
    kbps = bitrate or 128
    _, scale = min(_LAME_SCALES, key=lambda row: (abs(row[0] - kbps), -row[0]))
    return 20 * math.log10(scale)


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
    "flac": Format(
        name="flac",
        extension="flac",
        muxer="flac",
        # 16-bit like Auphonic's flac/wav; without this flac would pick 24-bit from our floats.
        codec_args=("-c:a", "flac", "-sample_fmt", "s16"),
        lossy=False,
    ),
    "wav": Format(
        name="wav",
        extension="wav",
        muxer="wav",
        # rf64 only kicks in past 4 GiB, where plain RIFF sizes overflow.
        codec_args=("-c:a", "pcm_s16le", "-rf64", "auto"),
        lossy=False,
    ),
}

_ALGORITHM_KEYS = {"filtering", "hipfilter", "normloudness", "loudnesstarget", "maxpeak"}
# Auphonic algorithms this engine does not implement: accepted only when switched off.
_UNSUPPORTED_TOGGLES = {
    "leveler", "autolevel", "gate", "crossgate", "denoise", "dehum", "debreath", "deverb",
    "silence_cutter", "filler_cutter", "cough_cutter", "music_cutter", "speech_isolation",
}  # fmt: skip
# Settings of those algorithms: meaningless while they are off, so ignored.
_UNSUPPORTED_SETTINGS = {
    "denoiseamount", "denoisemethod", "dehumamount", "dehumbase", "deverbamount",
    "debreathamount", "levelerstrength", "compressor", "musicgain", "backforeground",
    "bgreduction", "gatestrength", "loudnessmethod",
}  # fmt: skip
_OUTPUT_KEYS = {"format", "bitrate", "filename", "suffix", "mono_mixdown"}
_VIDEO_KEYS = {"start_time", "duration"}
_TOP_KEYS = {"algorithms", "output_files", "video", "metadata"}


def auto_maxpeak(target: float) -> float:
    """Return the default true-peak ceiling for a loudness target (Auphonic's rule)."""
    return -1.0 if target >= -18 else -2.0


def validate_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Return normalised parameters or raise ParamsError naming every bad key."""
    errors: dict[str, str] = {}
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ParamsError({"params": "must be an object"})
    for key in sorted(set(params) - _TOP_KEYS):
        errors[key] = "unknown parameter"

    algorithms = _algorithms(_section(params, "algorithms", errors), errors)
    outputs = _outputs(params.get("output_files"), errors)
    video = _video(_section(params, "video", errors), errors)
    metadata = params.get("metadata") or {}
    if not isinstance(metadata, dict):
        errors["metadata"] = "must be an object"
    if errors:
        raise ParamsError(errors)
    return {
        "algorithms": algorithms,
        "output_files": outputs,
        "video": video,
        "metadata": dict(metadata),
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


def _algorithms(section: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """Validate the algorithms section."""
    for key in sorted(set(section) - _ALGORITHM_KEYS - _UNSUPPORTED_SETTINGS):
        if key not in _UNSUPPORTED_TOGGLES:
            errors[f"algorithms.{key}"] = "unknown algorithm"
        elif _flag(section[key], f"algorithms.{key}", errors):
            errors[f"algorithms.{key}"] = "not supported by the built-in engine; switch it off"

    # Auphonic renamed hipfilter to filtering; accept either (providers.md).
    raw_filtering = section.get("filtering", section.get("hipfilter"))
    filtering = _flag(raw_filtering, "algorithms.filtering", errors)
    normloudness = _flag(section.get("normloudness"), "algorithms.normloudness", errors)
    target = _number(section.get("loudnesstarget"), "algorithms.loudnesstarget", errors)
    if target is not None and not TARGET_MIN <= target <= TARGET_MAX:
        errors["algorithms.loudnesstarget"] = (
            f"must be between {TARGET_MIN:g} and {TARGET_MAX:g} LUFS, got {target:g}"
        )
    maxpeak = _number(section.get("maxpeak"), "algorithms.maxpeak", errors)
    if maxpeak is not None and not MAXPEAK_MIN <= maxpeak <= 0:
        errors["algorithms.maxpeak"] = (
            f"must be between {MAXPEAK_MIN:g} and 0 dBTP (0 = automatic), got {maxpeak:g}"
        )
    if not normloudness:
        return {
            "filtering": filtering,
            "normloudness": False,
            "loudnesstarget": None,
            "maxpeak": None,
        }
    target = DEFAULT_TARGET if target is None else target
    if not maxpeak:  # missing or 0: automatic
        maxpeak = auto_maxpeak(target)
    return {
        "filtering": filtering,
        "normloudness": True,
        "loudnesstarget": target,
        "maxpeak": maxpeak,
    }


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
        for key in sorted(set(item) - _OUTPUT_KEYS):
            errors[f"{where}.{key}"] = "unknown option"
        name = item.get("format")
        fmt = FORMATS.get(str(name).lower()) if isinstance(name, str) else None
        if fmt is None:
            choices = ", ".join(FORMATS)
            errors[f"{where}.format"] = f"unsupported format {name!r} (choose from {choices})"
            continue
        if _flag(item.get("mono_mixdown"), f"{where}.mono_mixdown", errors):
            errors[f"{where}.mono_mixdown"] = "not supported by the built-in engine yet"
        bitrate = None
        if fmt.lossy:
            bitrate = _number(item.get("bitrate"), f"{where}.bitrate", errors)
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
            {"format": fmt.name, "bitrate": bitrate, "filename": filename, "suffix": suffix or ""}
        )
    return result


def _video(section: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """Validate the trim window (seconds), as ApyHub's extract-audio job takes it."""
    for key in sorted(set(section) - _VIDEO_KEYS):
        errors[f"video.{key}"] = "unknown option"
    start = _number(section.get("start_time"), "video.start_time", errors) or 0.0
    if start < 0:
        errors["video.start_time"] = "must be zero or more seconds"
    duration = _number(section.get("duration"), "video.duration", errors)
    if duration is not None and duration <= 0:
        errors["video.duration"] = "must be more than zero seconds"
    return {"start_time": start, "duration": duration}


def _flag(value: Any, where: str, errors: dict[str, str]) -> bool:
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


def _number(value: Any, where: str, errors: dict[str, str]) -> float | None:
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
