"""Generate test media with ffmpeg's sources and measure it independently of the engine."""

from __future__ import annotations

import math
import random
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def _speech(t: str = "t") -> str:
    """Return an aevalsrc expression for speech-like sound at time expression t.

    Syllables at ~4 Hz on a gliding 140 Hz voice with harmonics, fricative noise between them,
    phrase pauses and sparse loud plosives: the pauses and the crest factor of speech (peaks
    some 15 dB above the loudness), which a sine lacks.
    """
    phase = f"(2*PI*140*{t}-60*cos(PI*{t}))"
    voice = f"(sin({phase})+0.6*sin(2*{phase})+0.4*sin(3*{phase})+0.25*sin(5*{phase}))"
    syllable = f"pow(max(0,sin(2*PI*4*{t})),2)"
    fricative = f"(random(0)*2-1)*0.5*pow(max(0,sin(2*PI*4*{t}+2)),8)"
    phrase = f"gt(sin(2*PI*0.3*{t}),-0.4)"
    plosive = f"2*(random(0)*2-1)*pow(max(0,sin(2*PI*0.9*{t})),2000)"
    return f"0.3*({voice}*{syllable}+{fricative}+{plosive})*{phrase}"


def ffmpeg(*args: str) -> str:
    """Run ffmpeg quietly and return its stderr; fail loudly with that stderr."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stderr


def ebur128(path: Path) -> dict[str, float]:
    """Measure a file with ffmpeg ebur128=peak=true and return integrated, lra, true_peak."""
    stderr = ffmpeg("-i", str(path), "-map", "0:a:0", "-af", "ebur128=peak=true", "-f", "null", "-")
    summary = stderr[stderr.rindex("Summary:") :]

    def grab(pattern: str) -> float:
        return float(re.search(pattern, summary, re.S).group(1))

    return {
        "integrated": grab(r"I:\s+(-?[\d.]+|-inf) LUFS"),
        "lra": grab(r"LRA:\s+(-?[\d.]+) LU"),
        "true_peak": grab(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS"),
    }


def make_wav(
    path: Path,
    seconds: float = 10,
    channels: int = 2,
    rate: int = 44100,
    level_db: float = -30,
    kind: str = "speech",
    codec: str = "pcm_s16le",
) -> Path:
    """Write a test WAV.

    kind "sine": a 1 kHz sine whose peak is level_db dBFS on every channel.
    kind "speech": speech-like audio scaled to an integrated loudness of level_db LUFS
    (louder than about -12 LUFS it clips at full scale, as loud recordings do).
    kind "bursts": full-band noise bursts at level_db LUFS, whose inter-sample peaks run
    several dB over their sample peaks (what a sample-peak limiter misses).
    kind "hum": a 30 Hz sine at level_db dBFS, for testing the high-pass filter.
    kind "silence": digital silence.
    """
    if kind in {"sine", "hum"}:
        freq = 1000 if kind == "sine" else 30
        amplitude = 10 ** (level_db / 20)
        expr = "|".join([f"{amplitude}*sin(2*PI*{freq}*t)"] * channels)
        ffmpeg(
            "-f", "lavfi", "-i", f"aevalsrc={expr}:s={rate}:d={seconds}", "-c:a", codec, str(path)
        )
        return path
    if kind == "silence":
        layout = "mono" if channels == 1 else "stereo"
        source = f"anullsrc=r={rate}:cl={layout}"
        ffmpeg("-f", "lavfi", "-i", source, "-t", str(seconds), "-c:a", codec, str(path))
        return path
    raw = path.with_suffix(".raw.wav")
    if kind == "speech":
        # The right channel is a slightly delayed, quieter copy: a plausible two-mic image.
        exprs = [_speech(), f"0.85*{_speech('(t-0.0007)')}"][:channels]
        source = f"aevalsrc='{'|'.join(exprs)}':s={rate}:d={seconds}"
        # Speech (and a microphone) puts little energy above 7 kHz.
        ffmpeg("-f", "lavfi", "-i", source, "-af", "lowpass=f=7000", "-c:a", "pcm_f32le", str(raw))
    elif kind == "bursts":
        layout = "mono" if channels == 1 else "stereo"
        ffmpeg(
            "-f", "lavfi", "-i", f"anoisesrc=color=white:r={rate}:a=0.5:seed=3:d={seconds}",
            "-f", "lavfi", "-i", f"aevalsrc='pow(max(0,sin(2*PI*0.9*t)),200)':s={rate}",
            "-filter_complex", f"[0][1]amultiply,aformat=channel_layouts={layout}",
            "-t", str(seconds), "-c:a", "pcm_f32le", str(raw),
        )  # fmt: skip
    else:
        raise ValueError(kind)
    gain = level_db - ebur128(raw)["integrated"]
    ffmpeg("-i", str(raw), "-af", f"volume={gain:.3f}dB", "-c:a", codec, str(path))
    raw.unlink()
    return path


def make_mp3(path: Path, source: Path, bitrate: str = "128k") -> Path:
    """Encode source to MP3."""
    ffmpeg("-i", str(source), "-c:a", "libmp3lame", "-b:a", bitrate, str(path))
    return path


def make_video(path: Path, seconds: float = 5, rate: int = 48000) -> Path:
    """Write an MP4 with a test-pattern video and speech-like stereo AAC audio."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"aevalsrc='{_speech()}|{_speech()}':s={rate}:d={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-shortest", str(path),
    )  # fmt: skip
    return path


def make_corrupt(path: Path, kind: str = "random", source: Path | None = None) -> Path:
    """Write a file that is not decodable media.

    kind "random": seeded random bytes; "truncated": the first 30 bytes of source (a cut header);
    "halved": the first half of source (an MP4 loses its index, which ffmpeg writes last).
    """
    if kind == "random":
        path.write_bytes(random.Random(1234).randbytes(200_000))
    elif kind == "truncated":
        assert source is not None
        path.write_bytes(source.read_bytes()[:30])
    elif kind == "halved":
        assert source is not None
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        raise ValueError(kind)
    return path


def loop_to(path: Path, source: Path, seconds: float) -> Path:
    """Write source repeated up to seconds long, without re-generating the sound."""
    loops = math.ceil(seconds / float(probe_duration(source)))
    ffmpeg(
        "-stream_loop", str(loops), "-i", str(source), "-t", str(seconds), "-c", "copy", str(path)
    )
    return path


def probe_duration(path: Path) -> float:
    """Return a file's duration as ffmpeg decodes it (independent of the engine's probe)."""
    stderr = ffmpeg("-i", str(path), "-map", "0:a:0", "-f", "null", "-")
    hours, minutes, seconds = re.findall(r"time=(\d+):(\d+):([\d.]+)", stderr)[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
