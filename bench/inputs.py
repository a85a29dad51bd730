"""Generate the benchmark's input recordings once and reuse them between runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from media_jobs import samples
from media_jobs.engine import ffmpeg_binary

RATE = 44100
CHANNELS = 2
GAIN_DB = -12.0
_BYTES_PER_SECOND = RATE * CHANNELS * 2  # s16 PCM


def _key() -> str:
    """Return a short hash of everything that shapes the generated audio."""
    recipe = f"{samples.SPEECH_EXPR}|{RATE}|{CHANNELS}|{GAIN_DB}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:10]


def _complete(path: Path, seconds: float) -> bool:
    """Return True when path holds at least seconds of PCM (a header's worth of slack)."""
    try:
        return path.stat().st_size >= int(seconds * _BYTES_PER_SECOND)
    except OSError:
        return False


def speech(cache: Path, seconds: int) -> tuple[Path, bool]:
    """Return a speech-like WAV of seconds in cache, and whether it was already there."""
    path = cache / f"speech-{seconds}s-{RATE}hz-{CHANNELS}ch-{_key()}.wav"
    if _complete(path, seconds):
        return path, True
    cache.mkdir(parents=True, exist_ok=True)
    # Written under another name and renamed, so an interrupted run never leaves a short
    # file behind that a later run would take for the real one.
    partial = path.with_name(f".{path.stem}.partial.wav")
    samples.speech_like(partial, seconds=seconds, channels=CHANNELS, rate=RATE, gain_db=GAIN_DB)
    os.replace(partial, path)
    return path, False


def looped(source: Path, times: int, seconds: int) -> tuple[Path, bool]:
    """Return source repeated times over (a stream copy, no re-generation), cached beside it."""
    total = seconds * times
    path = source.with_name(source.name.replace(f"-{seconds}s-", f"-{total}s-looped-"))
    if _complete(path, total):
        return path, True
    partial = path.with_name(f".{path.stem}.partial.wav")
    subprocess.run(
        [
            ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-stream_loop", str(times - 1), "-i", str(source), "-c", "copy", str(partial),
        ],
        check=True,
    )  # fmt: skip
    os.replace(partial, path)
    return path, False
