"""Generated sample media (demo data and tests): no recordings are shipped with the project."""

from __future__ import annotations

import subprocess
from pathlib import Path

from media_jobs.engine import ffmpeg_binary

# Speech-like: band-limited noise, amplitude-modulated at syllable rate with pauses between phrases.
SPEECH_EXPR = (
    "0.5*(random(0)*2-1)*(0.55+0.45*sin(2*PI*4*t))"
    "*(0.6+0.4*sin(2*PI*0.31*t))*gt(sin(2*PI*0.2*t)+0.8,0)"
)


def speech_like(
    path: Path, *, seconds: float = 20, channels: int = 2, rate: int = 44100, gain_db: float = -12
) -> Path:
    """Write a speech-like test recording (WAV, or whatever the extension says)."""
    layout = "mono" if channels == 1 else "stereo"
    run(
        [
            "-f", "lavfi", "-i", f"aevalsrc='{SPEECH_EXPR}':s={rate}:d={seconds}:c={layout}",
            "-af", f"highpass=f=120,lowpass=f=5000,volume={gain_db}dB",
            str(path),
        ]
    )  # fmt: skip
    return path


def video_with_tone(path: Path, *, seconds: float = 8) -> Path:
    """Write a small test video (MP4, H.264 + AAC) with a tone on its audio track."""
    run(
        [
            "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-shortest", str(path),
        ]
    )  # fmt: skip
    return path


def run(args: list[str]) -> None:
    subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
    )
