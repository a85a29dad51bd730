"""Detailed loudness reports (report.py) and waveforms (waveform.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import pytest

from media_jobs.engine import EngineCancelled, EngineError, Loudness
from media_jobs.engine import waveform as waveform_module
from media_jobs.engine.report import (
    FrameStats,
    build_report,
    detailed_loudness,
    parse_frame_line,
    parse_frames,
)
from media_jobs.engine.waveform import waveform_peaks, waveform_png
from tests.media import ebur128, ffmpeg, make_video, make_wav

RATE = 48000
# ebur128 prints tenths of an LU; the sines below read their level to within that.
READING = 0.15


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("report-media")


def _tone(path: Path, expr: str, seconds: float, channels: int = 2, rate: int = RATE) -> Path:
    """Write a float WAV of an aevalsrc expression on every channel."""
    source = f"aevalsrc='{'|'.join([expr] * channels)}':s={rate}:d={seconds}"
    ffmpeg("-f", "lavfi", "-i", source, "-c:a", "pcm_f32le", str(path))
    return path


@pytest.fixture(scope="module")
def sine(media_dir) -> Path:
    """A 1 kHz sine at -23 dBFS (peak), stereo, 10 s: it reads -23 LUFS in every window."""
    return _tone(media_dir / "sine.wav", f"{10 ** (-23 / 20)}*sin(2*PI*1000*t)", 10)


@pytest.fixture(scope="module")
def burst(media_dir) -> Path:
    """A -40 dBFS sine with a 1 s burst at -14 dBFS from 4 s to 5 s."""
    level = f"if(between(t,4,5),{10 ** (-14 / 20)},{10 ** (-40 / 20)})"
    return _tone(media_dir / "burst.wav", f"{level}*sin(2*PI*1000*t)", 10)


@pytest.fixture(scope="module")
def noisy_speech(media_dir) -> tuple[Path, float, float]:
    """Return speech-like audio at -25 LUFS over pink noise at -40 LUFS, and both levels."""
    speech = make_wav(
        media_dir / "speech.wav", seconds=30, rate=RATE, level_db=-25, codec="pcm_f32le"
    )
    raw = media_dir / "noise.raw.wav"
    ffmpeg(
        "-f", "lavfi", "-i", f"anoisesrc=color=pink:r={RATE}:a=0.1:seed=7:d=30",
        "-af", "aformat=channel_layouts=stereo", "-c:a", "pcm_f32le", str(raw),
    )  # fmt: skip
    noise = media_dir / "noise.wav"
    gain = -40 - ebur128(raw)["integrated"]
    ffmpeg("-i", str(raw), "-af", f"volume={gain:.3f}dB", "-c:a", "pcm_f32le", str(noise))
    mixed = media_dir / "noisy-speech.wav"
    ffmpeg(
        "-i", str(speech), "-i", str(noise),
        "-filter_complex", "[0][1]amix=inputs=2:normalize=0", "-c:a", "pcm_f32le", str(mixed),
    )  # fmt: skip
    return mixed, ebur128(speech)["integrated"], ebur128(noise)["integrated"]


# report: frame log parsing


def _line(t: float, m: str, s: str, name: str = "r") -> str:
    return (
        f"[ebur128@{name} @ 0x55d0c0ffee00] [info] t: {t:.6f}   TARGET:-23 LUFS    M:{m:>6} "
        f"S:{s:>6}     I: -23.0 LUFS       LRA:   0.0 LU  FTPK: -6.0 -6.0 dBFS  "
        "TPK: -6.0 -6.0 dBFS"
    )


def test_parse_frame_line_reads_time_momentary_and_shortterm() -> None:
    frame = parse_frame_line(_line(3.099979, "-21.4", "-22.0"))
    assert frame is not None
    assert (frame.t, frame.momentary, frame.shortterm) == (3.099979, -21.4, -22.0)
    # A window not yet full (or only zeros) prints -120.7: no value.
    early = parse_frame_line(_line(0.199979, "-120.7", "-120.7"))
    assert early is not None
    assert (early.momentary, early.shortterm) == (None, None)
    # Without the level prefix, and from an unnamed instance.
    plain = "[Parsed_ebur128_0 @ 0x1] t: 1.5  TARGET:-23 LUFS  M: -30.0 S: -31.0  I: -30.0 LUFS"
    assert parse_frame_line(plain) is not None
    assert parse_frame_line("[info]   Stream #0:0: Audio: pcm_s16le, 48000 Hz") is None
    assert parse_frame_line("    I:         -23.0 LUFS") is None


def test_parse_frames_keeps_to_its_instance() -> None:
    lines = [
        "[info] Input #0, wav, from 'file:/x.wav':",
        _line(0.3, "-120.7", "-120.7"),
        _line(0.4, "-30.0", "-120.7"),
        _line(0.4, "-5.0", "-5.0", name="other"),  # another instance in the same graph
        _line(3.0, "-18.2", "-24.0"),
        _line(3.1, "-40.0", "-23.5"),
        "[ebur128@r @ 0x1] [info] Summary:",
    ]
    stats = parse_frames(lines, instance="r")
    assert stats.frames == 4
    assert stats.seconds == pytest.approx(3.1)
    assert stats.max_momentary == -18.2
    assert stats.max_shortterm == -23.5
    assert stats.momentary_percentile(10) == -40.0
    assert stats.momentary_percentile(50) == -30.0
    assert stats.momentary_percentile(100) == -18.2
    assert parse_frames(lines).frames == 5  # any instance


def test_noise_level_counts_digital_silence_below_everything() -> None:
    stats = FrameStats()
    for index in range(4, 100):  # 9.6 s of full windows
        silent = index < 9 or index >= 97  # 0.5 s lead-in, 0.3 s tail
        stats.add(parse_frame_line(_line(index / 10, "-120.7" if silent else "-50.0", "-50.0")))
    assert stats.silent_frames == 8
    assert stats.noise_level() == -50.0  # 8 of 96 frames: the 10th percentile is sound
    for index in range(100, 110):
        stats.add(parse_frame_line(_line(index / 10, "-120.7", "-120.7")))
    assert stats.noise_level() is None  # 18 of 106: the floor is digital silence


def test_frame_stats_histogram_is_bounded() -> None:
    stats = FrameStats("r")
    for index in range(36_000):  # an hour of frames
        stats.add(parse_frame_line(_line(index / 10, f"{-30 - index % 50 / 10:.1f}", "-30.0")))
    assert stats.frames == 36_000
    assert len(stats._momentary) == 50  # one bin per distinct 0.1 LU reading
    assert stats.noise_level() == pytest.approx(-34.5)


def test_build_report_of_silence_has_no_values() -> None:
    silence = Loudness(integrated=-70.0, lra=0.0, true_peak=float("-inf"))
    report = build_report(silence, FrameStats(), duration=5, channels=2, sample_rate=RATE)
    assert report == {
        "integrated": None,
        "lra": None,
        "true_peak": None,
        "max_momentary": None,
        "max_shortterm": None,
        "noise_level": None,
        "snr": None,
        "duration": 5,
        "channels": 2,
        "sample_rate": RATE,
    }


# report: measured files


def test_sine_reads_its_level_in_every_window(sine) -> None:
    report = detailed_loudness(sine)
    # A -23 dBFS 1 kHz sine in both channels is -23 LUFS however long the window.
    assert report["integrated"] == pytest.approx(-23.0, abs=READING)
    assert report["max_momentary"] == pytest.approx(-23.0, abs=READING)
    assert report["max_shortterm"] == pytest.approx(-23.0, abs=READING)
    assert report["true_peak"] == pytest.approx(-23.0, abs=0.2)
    assert report["lra"] == pytest.approx(0.0, abs=0.5)
    # Without pauses there is no noise floor to find: the estimate is the signal itself.
    assert report["noise_level"] == pytest.approx(-23.0, abs=READING)
    assert report["snr"] == pytest.approx(0.0, abs=2 * READING)
    assert report["duration"] == pytest.approx(10.0, abs=0.01)
    assert (report["channels"], report["sample_rate"]) == (2, RATE)


def test_burst_sets_max_momentary_and_shortterm(burst) -> None:
    report = detailed_loudness(burst)
    # The 1 s burst fills the 400 ms window: its own level.
    assert report["max_momentary"] == pytest.approx(-14.0, abs=READING)
    # The 3 s window holds 1 s of burst and 2 s at -40: 10*log10((10^-1.4 + 2*10^-4) / 3).
    assert report["max_shortterm"] == pytest.approx(-18.75, abs=READING)
    # Nine tenths of the frames hold only the -40 dBFS tone: that is the floor.
    assert report["noise_level"] == pytest.approx(-40.0, abs=READING)


def test_noise_level_and_snr_of_speech_over_noise(noisy_speech) -> None:
    path, speech_lufs, noise_lufs = noisy_speech
    assert speech_lufs - noise_lufs == pytest.approx(15, abs=0.2)  # the fixture is right
    report = detailed_loudness(path)
    assert report["noise_level"] == pytest.approx(noise_lufs, abs=4)
    assert report["snr"] == pytest.approx(15, abs=4)
    assert report["snr"] == pytest.approx(report["integrated"] - report["noise_level"], abs=0.11)


def test_noise_level_ignores_a_short_silent_lead_in(noisy_speech, media_dir) -> None:
    path, _, noise_lufs = noisy_speech
    padded = media_dir / "padded-speech.wav"
    ffmpeg(
        "-f", "lavfi", "-i", f"anullsrc=r={RATE}:cl=stereo:d=2", "-i", str(path),
        "-filter_complex", "[0][1]concat=n=2:v=0:a=1", "-c:a", "pcm_f32le", str(padded),
    )  # fmt: skip
    report = detailed_loudness(padded)
    assert report["noise_level"] == pytest.approx(noise_lufs, abs=4)
    assert report["snr"] == pytest.approx(15, abs=4)


def test_digitally_silent_pauses_have_no_noise_floor(media_dir) -> None:
    # make_wav's speech pauses are exact zeros, as after a gate or an edit.
    path = make_wav(media_dir / "clean-speech.wav", seconds=20, rate=RATE, level_db=-20)
    report = detailed_loudness(path)
    assert report["integrated"] == pytest.approx(-20, abs=0.2)
    assert report["noise_level"] is None  # -inf
    assert report["snr"] is None  # +inf


def test_silence_reports_none(media_dir) -> None:
    path = make_wav(media_dir / "silence.wav", seconds=5, rate=RATE, kind="silence")
    report = detailed_loudness(path)
    for key in ("integrated", "lra", "true_peak", "max_momentary", "max_shortterm"):
        assert report[key] is None, key
    assert report["noise_level"] is None
    assert report["snr"] is None
    assert report["duration"] == pytest.approx(5.0, abs=0.01)


def test_report_progress_rises_and_can_cancel(sine) -> None:
    seen: list[float] = []

    def progress(fraction: float, stage: str) -> None:
        assert stage == "analysing"
        seen.append(fraction)

    detailed_loudness(sine, progress=progress)
    assert seen[0] == 0.0
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert len(seen) > 10  # it moved while ffmpeg read, not only at the ends

    with pytest.raises(EngineCancelled):
        detailed_loudness(sine, progress=lambda fraction, stage: fraction < 0.3)


def test_report_errors_name_the_file_only(media_dir) -> None:
    with pytest.raises(EngineError, match=r"File not found: missing\.wav$"):
        detailed_loudness(media_dir / "missing.wav")
    silent_video = media_dir / "no-audio.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=1",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(silent_video),
    )  # fmt: skip
    with pytest.raises(EngineError, match="no audio stream") as info:
        detailed_loudness(silent_video)
    assert str(media_dir) not in str(info.value)


def test_report_of_a_video_measures_its_audio(media_dir) -> None:
    report = detailed_loudness(make_video(media_dir / "clip.mp4", seconds=4))
    assert report["integrated"] is not None
    assert report["channels"] == 2


# waveform


@pytest.fixture(scope="module")
def half_silent(media_dir) -> Path:
    """A 1 kHz sine peaking at -6 dBFS (0.5) for 5 s, then 5 s of digital silence."""
    return _tone(media_dir / "half.wav", "if(lt(t,5),0.5*sin(2*PI*1000*t),0)", 10, rate=44100)


def test_peaks_of_a_sine_at_minus_6_dbfs(media_dir) -> None:
    path = _tone(media_dir / "sine6.wav", "0.5*sin(2*PI*1000*t)", 4, channels=1, rate=44100)
    data = waveform_peaks(path, buckets=200)
    assert data["buckets"] == 200
    assert len(data["peaks"]) == 200
    assert data["duration"] == pytest.approx(4.0, abs=0.01)
    for low, high in data["peaks"][1:-1]:  # the ends hold the resampler's edges
        assert low == pytest.approx(-0.5, abs=0.02)
        assert high == pytest.approx(0.5, abs=0.02)


def test_peaks_of_stereo_keep_the_level(half_silent) -> None:
    # The downmix is normalised: two in-phase channels at 0.5 stay 0.5, not 0.71.
    data = waveform_peaks(half_silent, buckets=100)
    assert max(high for _, high in data["peaks"]) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    ("duration", "first_silent"),
    [(None, 51), (1.0, 51), (100.0, 60)],
    ids=["probed", "too-short", "too-long"],
)
def test_peaks_follow_the_sound_over_time(half_silent, duration, first_silent) -> None:
    # A wrong duration hint (a lying header) costs resolution, never the picture's shape: a
    # tenfold overestimate leaves 1 s buckets stretched over the width. Bucket 50 (5.0-5.1 s)
    # holds the resampler's ring-out after the tone stops.
    data = waveform_peaks(half_silent, buckets=100, duration=duration)
    assert data["buckets"] == 100
    assert data["duration"] == pytest.approx(10.0, abs=0.01)
    peaks = data["peaks"]
    assert len(peaks) == 100
    assert all(high == pytest.approx(0.5, abs=0.02) for _, high in peaks[1:50])
    assert all(low == pytest.approx(-0.5, abs=0.02) for low, _ in peaks[1:50])
    assert all(abs(low) < 1e-3 and abs(high) < 1e-3 for low, high in peaks[first_silent:])


def test_peaks_are_streamed_in_chunks(half_silent) -> None:
    chunks = list(waveform_module._pcm_chunks(half_silent))
    # 10 s at 8 kHz is 80,000 samples: several bounded reads, never the whole file.
    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= waveform_module._CHUNK_BYTES // 4
    assert sum(len(chunk) for chunk in chunks) == pytest.approx(80_000, abs=50)


def test_peaks_of_more_buckets_than_samples(media_dir) -> None:
    path = _tone(media_dir / "tiny.wav", "0.25", 0.01, channels=1)  # 80 samples at 8 kHz
    data = waveform_peaks(path, buckets=500)
    assert len(data["peaks"]) == 500
    assert all(high == pytest.approx(0.25, abs=0.05) for _, high in data["peaks"][50:450])


def test_peaks_errors(media_dir) -> None:
    with pytest.raises(ValueError, match="buckets"):
        waveform_peaks(media_dir / "x.wav", buckets=0)
    with pytest.raises(EngineError, match="File not found"):
        waveform_peaks(media_dir / "missing.wav")
    with pytest.raises(EngineError, match="File not found"):
        waveform_peaks(media_dir / "missing.wav", duration=3)


def _png_size(path: Path) -> tuple[int, int]:
    """Return (width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _alpha_column(path: Path, x: int) -> list[int]:
    """Return the alpha of every pixel in column x of an RGBA PNG, top to bottom."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).reformat(format="rgba")
    plane = frame.planes[0]
    data = bytes(plane)
    return [data[y * plane.line_size + 4 * x + 3] for y in range(frame.height)]


def test_waveform_png(half_silent, tmp_path) -> None:
    dest = waveform_png(half_silent, tmp_path / "wave.png", width=600, height=120)
    assert dest == tmp_path / "wave.png"
    assert _png_size(dest) == (600, 120)
    with av.open(str(dest)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (600, 120)
    # Linear scale: a 0.5 peak covers the middle half of the height, silence a hairline.
    loud = _alpha_column(dest, 150)
    drawn = [y for y, alpha in enumerate(loud) if alpha]
    assert min(drawn) == pytest.approx(30, abs=2)
    assert max(drawn) == pytest.approx(90, abs=2)
    quiet = _alpha_column(dest, 450)
    assert sum(1 for alpha in quiet if alpha) <= 2


def test_waveform_png_reuses_peaks_and_overwrites(half_silent, tmp_path, monkeypatch) -> None:
    peaks = waveform_peaks(half_silent, buckets=300)
    dest = tmp_path / "wave.png"
    dest.write_bytes(b"stale")

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded the file again")

    monkeypatch.setattr(waveform_module, "waveform_peaks", no_decode)
    waveform_png(half_silent, dest, width=300, height=80, peaks=peaks)
    assert _png_size(dest) == (300, 80)
