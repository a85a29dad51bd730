"""Generate test media with ffmpeg's sources and measure it independently of the engine."""

from __future__ import annotations

import math
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from media_jobs.engine import ffmpeg as engine_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def spawned(monkeypatch: Any) -> list[subprocess.Popen[bytes]]:
    """Return the list every ffmpeg the engine starts from now on is added to (with its args)."""
    launched: list[subprocess.Popen[bytes]] = []
    spawn = engine_ffmpeg.spawn

    def recording(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = spawn(cmd, **kwargs)
        launched.append(proc)
        return proc

    monkeypatch.setattr(engine_ffmpeg, "spawn", recording)
    return launched


def _speech(t: str = "t", *, phrases: bool = True) -> str:
    """Return an aevalsrc expression for speech-like sound at time expression t.

    Syllables at ~4 Hz on a gliding 140 Hz voice with harmonics, fricative noise between them,
    phrase pauses (1.2 s every 3.3 s, unless phrases is False) and sparse loud plosives: the
    pauses and the crest factor of speech (peaks some 15 dB above the loudness), which a sine
    lacks.
    """
    phase = f"(2*PI*140*{t}-60*cos(PI*{t}))"
    voice = f"(sin({phase})+0.6*sin(2*{phase})+0.4*sin(3*{phase})+0.25*sin(5*{phase}))"
    syllable = f"pow(max(0,sin(2*PI*4*{t})),2)"
    fricative = f"(random(0)*2-1)*0.5*pow(max(0,sin(2*PI*4*{t}+2)),8)"
    phrase = f"gt(sin(2*PI*0.3*{t}),-0.4)" if phrases else "1"
    plosive = f"2*(random(0)*2-1)*pow(max(0,sin(2*PI*0.9*{t})),2000)"
    return f"0.3*({voice}*{syllable}+{fricative}+{plosive})*{phrase}"


def ffmpeg(*args: str) -> str:
    """Run ffmpeg quietly and return its stderr; fail loudly with that stderr."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stderr


def ebur128(path: Path, chain: str = "") -> dict[str, float]:
    """Measure a file with ffmpeg ebur128=peak=true and return integrated, lra, true_peak.

    chain: filters to run first (the engine measures its input after its high-pass).
    """
    graph = ",".join(filter(None, [chain, "ebur128=peak=true"]))
    stderr = ffmpeg("-i", str(path), "-map", "0:a:0", "-af", graph, "-f", "null", "-")
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


def _scaled(raw: Path, path: Path, level_db: float, codec: str) -> Path:
    """Write raw scaled to level_db LUFS integrated as path, and delete raw."""
    gain = level_db - ebur128(raw)["integrated"]
    ffmpeg("-i", str(raw), "-af", f"volume={gain:.3f}dB", "-c:a", codec, str(path))
    raw.unlink()
    return path


def make_alternating_speech(
    path: Path,
    seconds: float = 64,
    segment: float = 8,
    levels: tuple[float, float] = (-30, -15),
    rate: int = 44100,
) -> Path:
    """Write stereo speech whose segments alternate between two loudness levels (LUFS).

    Each segment is scaled on its own so it measures its level; written as 32-bit float, so
    the loud segments' plosives keep their peaks instead of clipping.
    """
    parts: list[Path] = []
    count = math.ceil(seconds / segment)
    for index in range(count):
        part = path.with_name(f"{path.stem}.{index}.wav")
        offset = index * segment  # different syllables and phrases in every segment
        t = f"(t+{offset})"
        expr = f"{_speech(t)}|0.85*{_speech(f'({t}-0.0007)')}"
        raw = part.with_suffix(".raw.wav")
        ffmpeg(
            "-f", "lavfi", "-i", f"aevalsrc='{expr}':s={rate}:d={segment}",
            "-af", "lowpass=f=7000", "-c:a", "pcm_f32le", str(raw),
        )  # fmt: skip
        parts.append(_scaled(raw, part, levels[index % 2], "pcm_f32le"))
    listing = path.with_suffix(".txt")
    listing.write_text("".join(f"file '{part.name}'\n" for part in parts))
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(path))
    listing.unlink()
    for part in parts:
        part.unlink()
    return path


def make_paused_speech(
    path: Path,
    segments: int = 4,
    speech: float = 5.0,
    pause: float = 3.0,
    level_db: float = -20,
    floor_db: float = -75,
    rate: int = 44100,
) -> Path:
    """Write stereo speech in segments separated by pauses of a known length.

    The speech has no phrase pauses (its quiet gaps between syllables last 0.15 s at most);
    the pauses hold pink room noise floor_db dB under the speech's loudness, not digital silence.
    """
    period = speech + pause
    seconds = segments * period - pause
    talking = f"lt(mod(t,{period}),{speech})"
    voice = _speech(phrases=False)
    expr = f"{voice}*{talking}|0.85*{_speech('(t-0.0007)', phrases=False)}*{talking}"
    raw = path.with_suffix(".raw.wav")
    ffmpeg(
        "-f", "lavfi", "-i", f"aevalsrc='{expr}':s={rate}:d={seconds}",
        "-af", "lowpass=f=7000", "-c:a", "pcm_f32le", str(raw),
    )  # fmt: skip
    speech_only = _scaled(raw, path.with_suffix(".speech.wav"), level_db, "pcm_f32le")
    noise = path.with_suffix(".noise.wav")
    make_noise(noise, seconds, level_db=level_db + floor_db, rate=rate)
    mix(path, speech_only, noise)
    speech_only.unlink()
    noise.unlink()
    return path


def make_noise(
    path: Path, seconds: float, level_db: float, rate: int = 44100, color: str = "pink"
) -> Path:
    """Write stereo noise (independent channels) scaled to level_db LUFS, as 32-bit float."""
    raw = path.with_suffix(".raw.wav")
    ffmpeg(
        "-f", "lavfi", "-i", f"anoisesrc=color={color}:r={rate}:a=0.5:seed=7:d={seconds}",
        "-f", "lavfi", "-i", f"anoisesrc=color={color}:r={rate}:a=0.5:seed=11:d={seconds}",
        "-filter_complex", "[0][1]amerge=inputs=2", "-c:a", "pcm_f32le", str(raw),
    )  # fmt: skip
    return _scaled(raw, path, level_db, "pcm_f32le")


def mix(path: Path, *sources: Path, codec: str = "pcm_f32le") -> Path:
    """Write the sample-exact sum of sources (same rate and channels) as path."""
    inputs = [arg for source in sources for arg in ("-i", str(source))]
    count = len(sources)
    graph = "".join(f"[{k}:a]" for k in range(count))
    graph += f"amix=inputs={count}:normalize=0:duration=longest"
    ffmpeg(*inputs, "-filter_complex", graph, "-c:a", codec, str(path))
    return path


def read_pcm(path: Path, channels: int | None = None) -> Any:
    """Return a file's first audio stream as a float64 numpy array (samples x channels)."""
    import numpy as np

    args = [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0"]
    if channels is not None:
        args += ["-ac", str(channels)]
    args += ["-f", "f32le", "-c:a", "pcm_f32le", "-"]
    done = subprocess.run(args, capture_output=True, check=True)
    layout = channels or _channels(path)
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float64).reshape(-1, layout)


def _channels(path: Path) -> int:
    """Return the channel count of a file's first audio stream, as PyAV reads it."""
    import av

    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.channels


def snr_against(clean: Path, processed: Path, max_lag: int = 8192) -> float:
    """Return the SNR (dB) of processed against the clean reference it should equal.

    Processed is aligned to clean (cross-correlation, up to max_lag samples) and fitted by
    the least-squares gain g; whatever g*clean does not explain is noise: residual noise and
    the processing's own distortion of the speech alike.
    """
    import numpy as np

    ref = read_pcm(clean)
    out = read_pcm(processed, channels=ref.shape[1])
    lag = _lag(ref[:, 0], out[:, 0], max_lag)
    out = out[lag:] if lag >= 0 else np.vstack([np.zeros((-lag, out.shape[1])), out])
    length = min(len(ref), len(out))
    ref, out = ref[:length], out[:length]
    gain = float(np.sum(ref * out) / np.sum(ref * ref))
    residual = out - gain * ref
    return float(10 * np.log10(np.sum((gain * ref) ** 2) / np.sum(residual**2)))


def _lag(ref: Any, out: Any, max_lag: int) -> int:
    """Return by how many samples out lags ref (negative: it leads)."""
    import numpy as np

    size = 1 << (len(ref) + len(out)).bit_length()
    spectrum = np.fft.rfft(out, size) * np.conj(np.fft.rfft(ref, size))
    corr = np.fft.irfft(spectrum, size)
    candidates = np.concatenate([corr[: max_lag + 1], corr[-max_lag:]])
    index = int(np.argmax(candidates))
    return index if index <= max_lag else index - len(candidates)


def video_packets(path: Path) -> tuple[str, list[int]]:
    """Return the first video stream's codec name and the sizes of its packets, in order."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        sizes = [packet.size for packet in container.demux(stream) if packet.size]
        return stream.codec_context.codec.name, sizes


def audio_format(path: Path) -> dict[str, Any]:
    """Return the first audio stream's codec, sample format, rate, channels and bit depth."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        return {
            "codec": ctx.codec.canonical_name,
            "format": ctx.format.name if ctx.format else None,
            "rate": ctx.sample_rate,
            "channels": ctx.channels,
            # PyAV decodes 24-bit PCM into s32: the codec says what the file holds.
            "bits": 24
            if "24" in ctx.codec.name
            else (ctx.format.bytes * 8 if ctx.format else None),
            "container": container.format.name,
        }


def make_noisy(path: Path, clean: Path, snr_db: float, color: str = "pink") -> Path:
    """Write clean plus noise whose power is exactly snr_db under the clean signal's."""
    import numpy as np

    noise = make_noise(path.with_suffix(".noise.wav"), probe_duration(clean), -30, color=color)
    ref, hiss = read_pcm(clean), read_pcm(noise)
    length = min(len(ref), len(hiss))
    scale = math.sqrt(np.sum(ref[:length] ** 2) / np.sum(hiss[:length] ** 2) / 10 ** (snr_db / 10))
    scaled = path.with_suffix(".scaled.wav")
    ffmpeg("-i", str(noise), "-af", f"volume={scale:.9f}", "-c:a", "pcm_f32le", str(scaled))
    mix(path, clean, scaled)
    noise.unlink()
    scaled.unlink()
    return path


# media_jobs.samples' speech-like noise with its hard phrase gate, or with that gate replaced by a
# smooth swell (speech fading in and out of its phrases rather than switching).
SPEECH_ENVELOPES = ("gate", "smooth")
_SAMPLES_GATE = "gt(sin(2*PI*0.2*t)+0.8,0)"
_SMOOTH_GATE = "pow(max(0,sin(2*PI*0.2*t)+0.8)/1.8,2)"


def make_sample_speech(
    path: Path,
    seconds: float = 4,
    channels: int = 1,
    level_db: float = -30,
    envelope: str = "gate",
    rate: int = 44100,
) -> Path:
    """Write media_jobs.samples' speech-like noise scaled to level_db LUFS, as 16-bit PCM.

    Noise-like "speech" is what lossy encoders code worst (they mask noise with noise, some
    12 dB under the signal), so limited to a true peak it is the hardest case for the ceiling.
    Louder than about -14 LUFS (mono) its peaks clip at full scale, as loud recordings do.
    """
    from media_jobs.samples import SPEECH_EXPR

    if envelope not in SPEECH_ENVELOPES:
        raise ValueError(envelope)
    assert _SAMPLES_GATE in SPEECH_EXPR, "media_jobs.samples changed its phrase gate"
    expr = SPEECH_EXPR if envelope == "gate" else SPEECH_EXPR.replace(_SAMPLES_GATE, _SMOOTH_GATE)
    layout = "mono" if channels == 1 else "stereo"
    raw = path.with_suffix(".raw.wav")
    ffmpeg(
        "-f", "lavfi", "-i", f"aevalsrc='{expr}':s={rate}:d={seconds}:c={layout}",
        "-af", "highpass=f=120,lowpass=f=5000", "-c:a", "pcm_f32le", str(raw),
    )  # fmt: skip
    return _scaled(raw, path, level_db, "pcm_s16le")
