"""The built-in engine: probe, measure, process; checked with an independent ffmpeg meter."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from media_jobs import engine
from media_jobs.engine import (
    EngineCancelled,
    EngineError,
    ParamsError,
    mp3join,
    pipeline,
    processing,
    report,
)
from tests.media import (
    SPEECH_ENVELOPES,
    ebur128,
    ffmpeg,
    make_corrupt,
    make_mp3,
    make_sample_speech,
    make_video,
    make_wav,
    probe_duration,
    read_pcm,
    spawned,
)

PODCAST = {
    "algorithms": {"filtering": True, "normloudness": True, "loudnesstarget": -16, "maxpeak": -1},
    "output_files": [{"format": "mp3", "bitrate": 128}],
}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine-media")


@pytest.fixture(scope="module")
def quiet_speech(media_dir) -> Path:
    return make_wav(media_dir / "quiet.wav", seconds=12, level_db=-30)


@pytest.fixture(scope="module")
def loud_speech(media_dir) -> Path:
    # -8 LUFS in 16-bit: the plosives clip at full scale, as in an overdriven recording.
    return make_wav(media_dir / "loud.wav", seconds=10, level_db=-8)


@pytest.fixture(scope="module")
def mono_speech(media_dir) -> Path:
    return make_wav(media_dir / "mono.wav", seconds=8, channels=1, rate=48000, level_db=-28)


@pytest.fixture(scope="module")
def video(media_dir) -> Path:
    return make_video(media_dir / "clip.mp4", seconds=8)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# probe


def test_it_probes_a_wav(media_dir):
    wav = make_wav(media_dir / "probe.wav", seconds=7, channels=2, rate=44100, kind="sine")
    facts = engine.probe(wav)
    assert facts.format_name == "wav"
    assert facts.audio_codec == "pcm_s16le"
    assert (facts.channels, facts.sample_rate) == (2, 44100)
    assert facts.duration == pytest.approx(7.0, abs=0.1)
    assert facts.bit_rate == 44100 * 2 * 16
    assert facts.has_audio and not facts.has_video
    assert facts.as_dict()["duration"] == facts.duration


def test_it_probes_an_mp3(media_dir, mono_speech):
    mp3 = make_mp3(media_dir / "probe.mp3", mono_speech, bitrate="96k")
    facts = engine.probe(mp3)
    assert facts.format_name == "mp3"
    assert facts.audio_codec == "mp3"
    assert (facts.channels, facts.sample_rate) == (1, 48000)
    assert facts.duration == pytest.approx(8.0, abs=0.1)
    assert facts.bit_rate == 96000
    assert facts.has_audio and not facts.has_video


def test_it_probes_a_video(video):
    facts = engine.probe(video)
    assert "mp4" in facts.format_name.split(",")
    assert facts.audio_codec == "aac"
    assert (facts.channels, facts.sample_rate) == (2, 48000)
    assert facts.duration == pytest.approx(8.0, abs=0.1)
    assert facts.has_audio and facts.has_video


def test_it_does_not_count_cover_art_as_video(tmp_path, mono_speech):
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:duration=1", "-frames:v", "1", str(cover))
    tagged = tmp_path / "tagged.mp3"
    ffmpeg(
        "-i", str(mono_speech), "-i", str(cover), "-map", "0:a", "-map", "1:v",
        "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic", str(tagged),
    )  # fmt: skip
    facts = engine.probe(tagged)
    assert facts.has_audio and not facts.has_video
    result = engine.process(tagged, {"output_files": [{"format": "wav"}]}, tmp_path / "out")
    assert not engine.probe(result.outputs[0].path).has_video


@pytest.mark.parametrize("name", ["noise.mp3", "noise.wav", "noise.bin", "noise"])
def test_it_refuses_random_bytes(tmp_path, name):
    junk = make_corrupt(tmp_path / name, "random")
    with pytest.raises(EngineError, match="could not be decoded"):
        engine.probe(junk)


def test_it_refuses_a_truncated_header(tmp_path, quiet_speech):
    cut = make_corrupt(tmp_path / "cut.wav", "truncated", source=quiet_speech)
    with pytest.raises(EngineError, match="could not be decoded"):
        engine.probe(cut)


def test_it_refuses_a_video_cut_before_its_index(tmp_path, video):
    half = make_corrupt(tmp_path / "half.mp4", "halved", source=video)
    with pytest.raises(EngineError, match="could not be decoded"):
        engine.probe(half)


def test_it_refuses_a_text_file_and_a_missing_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not audio\n" * 200)
    with pytest.raises(EngineError, match="could not be decoded"):
        engine.probe(text)
    with pytest.raises(EngineError, match="not found"):
        engine.probe(tmp_path / "nope.wav")


# measure


@pytest.mark.parametrize(("level", "expected"), [(-23.0, -23.0), (-20.0, -20.0)])
def test_it_measures_a_stereo_sine_like_ebu_tech_3341(tmp_path, level, expected):
    # EBU Tech 3341 case 1: a 1 kHz sine at -23 dBFS on both channels reads -23.0 LUFS
    # (the K-weighting gain at 1 kHz offsets BS.1770's -0.691 dB), so -20 dBFS reads -20.
    sine = make_wav(tmp_path / "sine.wav", seconds=10, level_db=level, kind="sine")
    loudness = engine.measure(sine)
    assert loudness.integrated == pytest.approx(expected, abs=0.2)
    assert loudness.true_peak == pytest.approx(level, abs=0.2)
    assert loudness.lra == pytest.approx(0.0, abs=0.2)
    independent = ebur128(sine)
    assert loudness.integrated == pytest.approx(independent["integrated"], abs=0.05)


def test_it_measures_silence_without_infinities_in_json(tmp_path):
    silent = make_wav(tmp_path / "silent.wav", seconds=3, kind="silence")
    loudness = engine.measure(silent)
    assert loudness.is_silent
    assert loudness.as_dict()["true_peak"] is None


def test_it_refuses_to_measure_a_video_without_audio(tmp_path):
    mute = tmp_path / "mute.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2", "-c:v", "mpeg4", str(mute)
    )
    assert not engine.probe(mute).has_audio
    with pytest.raises(EngineError, match="no audio stream"):
        engine.measure(mute)
    with pytest.raises(EngineError, match="no audio stream"):
        engine.process(mute, PODCAST, tmp_path / "out")


# process: loudness


def test_it_normalises_quiet_speech_for_podcasts(tmp_path, quiet_speech):
    result = engine.process(quiet_speech, PODCAST, tmp_path, basename="episode")
    [mp3] = result.outputs
    assert mp3.filename == "episode.mp3"
    assert mp3.path == tmp_path / "episode.mp3"
    measured = ebur128(mp3.path)
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)
    assert measured["true_peak"] <= -1.0
    facts = engine.probe(mp3.path)
    assert (facts.audio_codec, facts.sample_rate, facts.channels) == ("mp3", 44100, 2)
    assert facts.bit_rate == 128000
    assert facts.duration == pytest.approx(12.0, abs=0.1)
    # The statistics are the encoded file's, as an independent meter reads it.
    assert mp3.statistics["integrated"] == pytest.approx(measured["integrated"], abs=0.15)
    assert mp3.statistics["true_peak"] == pytest.approx(measured["true_peak"], abs=0.15)
    assert mp3.statistics["sample_rate"] == 44100
    assert mp3.size == mp3.path.stat().st_size
    assert mp3.checksum == _sha256(mp3.path)
    stats = result.statistics
    assert stats["input"]["integrated"] == pytest.approx(-30.0, abs=0.5)
    assert stats["input"]["sample_rate"] == 44100
    assert stats["gain"] == pytest.approx(14.0, abs=1.5)
    assert (stats["target"], stats["max_peak"]) == (-16.0, -1.0)
    assert stats["output"] == mp3.statistics
    assert stats["limiter"]  # +14 dB lifts the plosives past the ceiling
    # LAME's own -0.45 dB is compensated up front, so one render hits the target.
    assert stats["renders"] == 1
    assert stats["warnings"] == []
    assert not list(tmp_path.glob(".*.part"))


def test_it_brings_loud_clipped_speech_down_under_the_ceiling(tmp_path, loud_speech):
    assert ebur128(loud_speech)["true_peak"] > 0  # inter-sample peaks over full scale
    result = engine.process(loud_speech, PODCAST, tmp_path)
    measured = ebur128(result.outputs[0].path)
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)
    assert measured["true_peak"] <= -1.0
    assert result.statistics["gain"] < -5
    # Pass 1 measured what the render plays (high-passed in floating point, not clipped in
    # 16-bit), so the first render is already on target.
    assert result.statistics["renders"] == 1


@pytest.fixture(scope="module")
def bursts(media_dir) -> Path:
    # Full-band noise bursts: inter-sample peaks far over the sample peaks, and lifting them
    # to -16 LUFS takes some 10 dB of limiting.
    return make_wav(media_dir / "bursts.wav", seconds=8, level_db=-22, kind="bursts")


def test_it_limits_true_peaks_not_just_sample_peaks(tmp_path, bursts):
    params = {**PODCAST, "output_files": [{"format": "wav"}]}
    result = engine.process(bursts, params, tmp_path)
    measured = ebur128(result.outputs[0].path)
    assert measured["true_peak"] <= -1.0
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)


@pytest.mark.parametrize("fmt", ["mp3", "aac", "opus"])
def test_it_keeps_the_ceiling_when_an_encoder_overshoots(tmp_path, bursts, fmt):
    # Lossy encoders add up to 3 dB of peaks to such noise, whatever the limiter did; the
    # ceiling wins, and loudness given up for it is reported.
    params = {**PODCAST, "output_files": [{"format": fmt}]}
    result = engine.process(bursts, params, tmp_path)
    [output] = result.outputs
    measured = ebur128(output.path)
    assert measured["true_peak"] <= -1.0
    if abs(measured["integrated"] + 16.0) > 0.5:
        assert output.filename in result.statistics["warnings"][0]
        assert measured["integrated"] > -21


# process: the true-peak ceiling on speech-like noise, which lossy encoders code worst


# Input level (LUFS) -> seconds: the quiet inputs take the most gain (and mono at -16 LUFS the
# deepest limiting), the long ones give the encoders the most peaks to overshoot on.
SAMPLE_LEVELS = {-40: 20, -24: 4, -8: 8}


@pytest.mark.parametrize("level", sorted(SAMPLE_LEVELS))
@pytest.mark.parametrize("envelope", SPEECH_ENVELOPES)
@pytest.mark.parametrize("channels", [1, 2])
def test_it_holds_target_and_ceiling_on_speech_like_noise(
    tmp_path, media_dir, channels, envelope, level
):
    # Mono at -16 LUFS carries 3 dB more per channel than stereo, so its peaks are limited
    # several dB deep; MP3, AAC and Opus then add 1-2.6 dB of coding noise on top of the
    # limit. Once this ended 1.3 LU short after three renders, or in an EngineError.
    source = media_dir / f"sample-{envelope}-{channels}ch{level}.wav"
    if not source.exists():
        seconds = SAMPLE_LEVELS[level]
        make_sample_speech(source, seconds, channels, level_db=level, envelope=envelope)
    params = {**PODCAST, "output_files": [{"format": f} for f in ("mp3", "aac", "opus")]}
    result = engine.process(source, params, tmp_path)
    for output in result.outputs:
        measured = ebur128(output.path)
        assert measured["integrated"] == pytest.approx(-16.0, abs=0.5), output.format
        assert measured["true_peak"] <= -1.0, output.format
    assert result.statistics["warnings"] == []
    assert result.statistics["renders"] <= processing.MAX_RENDERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.m4a", "output.mp3", "output.opus"]


def _mp3_plan(tmp_path: Path) -> processing._Plan:
    """Return an MP3 output's plan, as _plans() makes it, for takes set by hand."""
    return processing._Plan(
        fmt=engine.FORMATS["mp3"], bitrate=128, filename="a.mp3", path=tmp_path / "a.mp3",
        temp=tmp_path / ".a.mp3.part", rate=44100, resample=False, margin=1.0,
        encoder_gain=-0.2, codec=engine.FORMATS["mp3"], muxer="mp3",
    )  # fmt: skip


def test_it_keeps_the_best_take_when_a_correction_lands_worse(tmp_path):
    plan = _mp3_plan(tmp_path)
    levels = [(-16.4, -0.5), (-16.1, -1.2), (-16.0, -0.8), (-17.0, -3.0)]
    for integrated, peak in levels:
        [take] = plan.start_render()
        take.path.write_bytes(b"x")
        take.measured = engine.Loudness(integrated, 3.0, peak)
        plan.keep(take, -16.0, -1.0)
    assert plan.best is not None and plan.best.measured is not None
    # Under the ceiling first, then nearest the target.
    assert (plan.best.measured.integrated, plan.best.measured.true_peak) == (-16.1, -1.2)
    assert [p.name for p in tmp_path.iterdir()] == [plan.best.path.name]
    plan.discard()
    assert not list(tmp_path.iterdir())


def test_a_peak_read_within_the_check_allowance_of_the_ceiling_counts_as_over(tmp_path):
    # Outputs are read at 4x, which can sit up to PEAK_CHECK_ALLOWANCE under ebur128's
    # 192 kHz reading of the same file: -1.05 dBTP at 4x may be over -1.0 by ebur128.
    plan = _mp3_plan(tmp_path)
    [take] = plan.start_render()
    take.path.write_bytes(b"x")
    take.measured = engine.Loudness(-16.0, 3.0, -1.05)
    plan.keep(take, -16.0, -1.0)
    assert processing._needs_correction(plan, -16.0, -1.0)
    with pytest.raises(EngineError, match="ceiling"):
        processing._final_check([plan], -16.0, -1.0)
    [safer] = plan.start_render()
    safer.path.write_bytes(b"y")
    safer.measured = engine.Loudness(-16.3, 3.0, -1.2)
    plan.keep(safer, -16.0, -1.0)
    assert plan.best is safer
    assert not processing._needs_correction(plan, -16.0, -1.0)
    plan.discard()


# process: long programmes in parallel stretches


@pytest.fixture
def stretches(monkeypatch, settings):
    """Split programmes of 30 s or more into three stretches, as three cores would."""
    settings.ENGINE_WORKERS = 3
    monkeypatch.setattr(processing, "SEGMENT_MIN_S", 10.0)


@pytest.fixture(scope="module")
def long_speech(media_dir) -> Path:
    return make_wav(media_dir / "long.wav", seconds=36, level_db=-24)


def test_a_long_jobs_output_report_comes_with_its_render(
    tmp_path, monkeypatch, stretches, long_speech
):
    measured: list[Path] = []
    detailed = report.detailed_loudness

    def recording(path, **kwargs):
        measured.append(Path(path))
        return detailed(path, **kwargs)

    monkeypatch.setattr(report, "detailed_loudness", recording)
    result = pipeline.run(long_speech, PODCAST, tmp_path, waveform_image=False)
    [output] = result.outputs
    # The input is decoded for its report; the output's came from the render's own meters.
    assert measured == [long_speech]
    expected = detailed(output.path)
    keys = ["integrated", "lra", "true_peak", "max_momentary", "max_shortterm"]
    assert all(expected[key] is not None for key in keys)  # the comparisons compare something
    for key in [*keys, "noise_level", "snr"]:
        got = result.statistics["output"][key]
        # The pauses are digital silence: no noise floor (None), in both.
        assert got == (None if expected[key] is None else pytest.approx(expected[key], abs=0.2))
        assert output.statistics[key] == got, key


def test_it_renders_a_long_programme_in_parallel_stretches(
    tmp_path, monkeypatch, stretches, long_speech
):
    launched = spawned(monkeypatch)
    params = {
        **PODCAST,
        "output_files": [
            {"format": "mp3"},
            {"format": "mp3-vbr", "suffix": "-vbr"},
            {"format": "aac"},
        ],
    }
    calls: list[float] = []
    result = engine.process(long_speech, params, tmp_path, progress=lambda f, s: calls.append(f))
    assert calls == sorted(calls) and calls[-1] == 1.0
    # Pass 1 in three stretches; the render: three stretches of both MP3s, the AAC whole.
    assert result.statistics["renders"] == 1
    assert len(launched) == 3 + 4
    # Combined from the stretches' blocks as one meter over the whole would measure it.
    whole = ebur128(long_speech, "aformat=sample_fmts=dbl,highpass=f=80")
    for key in ("integrated", "true_peak", "lra"):
        assert result.statistics["input"][key] == pytest.approx(whole[key], abs=0.15), key
    for output in result.outputs:
        _assert_on_target_as_reported(output)
        # Joined sample-exact: not a frame too many or too few.
        assert probe_duration(output.path) == pytest.approx(36.0, abs=0.001)
        assert ffmpeg("-v", "error", "-i", str(output.path), "-f", "null", "-") == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "output-vbr.mp3",
        "output.m4a",
        "output.mp3",
    ]


def test_lossless_outputs_are_measured_on_what_their_encoder_is_fed(
    tmp_path, monkeypatch, stretches, long_speech
):
    launched = spawned(monkeypatch)
    params = {
        **PODCAST,
        "output_files": [{"format": "mp3"}, {"format": "flac"}, {"format": "wav-24bit"}],
    }
    result = engine.process(long_speech, params, tmp_path)
    # The MP3 renders in stretches; the lossless outputs in one more process, whose meters
    # read the samples its encoders are fed: nothing is decoded again.
    [lossless] = [proc for proc in launched if any(".flac." in arg for arg in proc.args)]
    assert "-dec" not in lossless.args
    assert all("-dec" in proc.args for proc in launched if "libmp3lame" in proc.args)
    for output in result.outputs:
        _assert_on_target_as_reported(output)


def _assert_on_target_as_reported(output: Any) -> None:
    """Check an output of PODCAST with an independent meter: on target, and as reported."""
    measured = ebur128(output.path)
    assert measured["integrated"] == pytest.approx(-16.0, abs=0.5), output.filename
    assert measured["true_peak"] <= -1.0
    for key in ("integrated", "true_peak", "lra"):
        assert output.statistics[key] == pytest.approx(measured[key], abs=0.15), key


def test_it_cancels_parallel_stretches_and_leaves_nothing(
    tmp_path, monkeypatch, stretches, long_speech
):
    launched = spawned(monkeypatch)

    def progress(fraction: float, stage: str) -> bool:
        return not (stage == "encoding" and fraction > 0.3)

    out = tmp_path / "out"
    with pytest.raises(EngineCancelled):
        engine.process(long_speech, PODCAST, out, progress=progress)
    assert len(launched) > 3
    assert all(proc.returncode is not None for proc in launched)  # none left running
    assert not out.exists() or list(out.iterdir()) == []


@pytest.fixture(scope="module")
def overlapping_mp3s(media_dir) -> tuple[Path, Path, Path, int]:
    """Return one encode of a programme, two of overlapping stretches, and the second's frame."""
    source = make_wav(media_dir / "join.wav", seconds=20, level_db=-20)
    frame = mp3join.frame_samples(44100)
    start = (10 * 44100 - 5 * 44100) // frame * frame  # 5 s of pre-roll before 10 s
    whole, first, second = (media_dir / f"{n}.mp3" for n in ("whole", "first", "second"))
    encode = ("-c:a", "libmp3lame", "-b:a", "128k")
    ffmpeg("-i", str(source), *encode, str(whole))
    ffmpeg("-i", str(source), "-af", f"atrim=end_sample={12 * 44100}", *encode, str(first))
    ffmpeg("-i", str(source), "-af", f"atrim=start_sample={start}", *encode, str(second))
    return whole, first, second, start // frame


@pytest.mark.parametrize("exact", [True, False])
def test_it_joins_mp3_stretches_seamlessly(tmp_path, overlapping_mp3s, exact):
    whole, first, second, offset = overlapping_mp3s
    joined = tmp_path / "joined.mp3"
    frame = mp3join.frame_samples(44100)
    # exact=False cuts where the encoders still differ, patching the bit reservoir.
    around = 10 * 44100 // frame if exact else offset + 12
    [cut] = mp3join.join([(first, 0), (second, offset)], [around], joined, exact=exact)
    assert ffmpeg("-v", "error", "-i", str(joined), "-f", "null", "-") == ""
    decoded, before, after = read_pcm(joined), read_pcm(first), read_pcm(second)
    assert len(decoded) == len(read_pcm(whole)) == 20 * 44100
    at = cut * frame
    # The first stretch's audio up to the cut, the second's from a granule after it.
    assert (decoded[:at] == before[:at]).all()
    tail = at + frame // 2 - offset * frame
    assert (decoded[at + frame // 2 :] == after[tail:]).all()
    # LAME's tag carries the joined counts and valid CRCs.
    stream = mp3join._scan(joined, 0)
    audio = joined.read_bytes()[stream.offsets[0] : stream.offsets[-1]]
    assert stream.music_crc == mp3join._crc16(audio)
    lame = mp3join._xing_layout(stream.info)["lame"]
    assert stream.info[lame + 34 : lame + 36] == mp3join._crc16(stream.info[:190]).to_bytes(
        2, "big"
    )


def test_it_normalises_to_broadcast_loudness_in_wav(tmp_path, quiet_speech):
    params = {
        "algorithms": {"normloudness": True, "loudnesstarget": -23},
        "output_files": [{"format": "wav"}],
    }
    result = engine.process(quiet_speech, params, tmp_path)
    measured = ebur128(result.outputs[0].path)
    assert measured["integrated"] == pytest.approx(-23.0, abs=0.5)
    # maxpeak missing: automatic, -2 dBTP below -18 LUFS.
    assert result.statistics["max_peak"] == -2.0
    assert measured["true_peak"] <= -2.0
    facts = engine.probe(result.outputs[0].path)
    assert (facts.audio_codec, facts.sample_rate, facts.channels) == ("pcm_s16le", 44100, 2)


def test_it_keeps_mono_mono(tmp_path, mono_speech):
    params = {
        "algorithms": {"filtering": True, "normloudness": True, "loudnesstarget": -19},
        "output_files": [{"format": "mp3", "bitrate": 64}],
    }
    result = engine.process(mono_speech, params, tmp_path)
    path = result.outputs[0].path
    facts = engine.probe(path)
    assert (facts.channels, facts.sample_rate) == (1, 48000)
    measured = ebur128(path)
    assert measured["integrated"] == pytest.approx(-19.0, abs=0.5)
    assert measured["true_peak"] <= -1.0


def test_it_high_passes_rumble_when_filtering(tmp_path):
    hum = make_wav(tmp_path / "hum.wav", seconds=5, level_db=-12, kind="hum")
    plain = {"output_files": [{"format": "wav"}]}
    filtered = {"algorithms": {"filtering": True}, "output_files": [{"format": "wav"}]}
    kept = engine.process(hum, plain, tmp_path / "plain").outputs[0].path
    cut = engine.process(hum, filtered, tmp_path / "filtered").outputs[0].path
    # An 80 Hz high-pass takes a 30 Hz hum down by about 15 dB.
    assert ebur128(kept)["true_peak"] - ebur128(cut)["true_peak"] > 10


def test_it_only_transcodes_without_normalisation(tmp_path, quiet_speech):
    result = engine.process(quiet_speech, {"output_files": [{"format": "flac"}]}, tmp_path)
    measured = ebur128(result.outputs[0].path)
    assert measured["integrated"] == pytest.approx(ebur128(quiet_speech)["integrated"], abs=0.1)
    assert result.statistics["gain"] == 0
    assert result.statistics["target"] is None
    assert result.statistics["input"]["integrated"] == pytest.approx(-30.0, abs=0.2)


def test_it_warns_instead_of_amplifying_silence(tmp_path):
    silent = make_wav(tmp_path / "silent.wav", seconds=3, kind="silence")
    result = engine.process(silent, PODCAST, tmp_path / "out")
    assert result.statistics["gain"] == 0
    assert "silent" in result.statistics["warnings"][0]


# process: formats and names


def test_it_encodes_every_format_from_one_decode(tmp_path, quiet_speech):
    params = {
        **PODCAST,
        "output_files": [
            {"format": "mp3", "bitrate": "96"},
            {"format": "aac", "bitrate": 96},
            {"format": "opus"},
            {"format": "flac"},
            {"format": "wav"},
        ],
    }
    result = engine.process(quiet_speech, params, tmp_path, basename="talk")
    expected = {
        "mp3": ("talk.mp3", "mp3", "mp3", 44100),
        "aac": ("talk.m4a", "mov,mp4,m4a,3gp,3g2,mj2", "aac", 44100),
        "opus": ("talk.opus", "ogg", "opus", 48000),
        "flac": ("talk.flac", "flac", "flac", 44100),
        "wav": ("talk.wav", "wav", "pcm_s16le", 44100),
    }
    assert [o.format for o in result.outputs] == list(expected)
    for output in result.outputs:
        filename, container, codec, rate = expected[output.format]
        assert output.filename == filename
        facts = engine.probe(output.path)
        assert (facts.format_name, facts.audio_codec) == (container, codec)
        assert (facts.sample_rate, facts.channels) == (rate, 2)
        assert facts.duration == pytest.approx(12.0, abs=0.1)
        measured = ebur128(output.path)
        assert measured["integrated"] == pytest.approx(-16.0, abs=0.5), output.format
        assert measured["true_peak"] <= -1.0, output.format
        # Measured in the render run by decoding the encoder's output: same as the file's.
        assert output.statistics["integrated"] == pytest.approx(measured["integrated"], abs=0.15)
        assert output.statistics["true_peak"] == pytest.approx(measured["true_peak"], abs=0.15)
        assert output.checksum == _sha256(output.path)
    assert engine.probe(tmp_path / "talk.mp3").bit_rate == 96000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v[0] for v in expected.values())


def test_it_names_outputs_by_filename_and_suffix(tmp_path, mono_speech):
    params = {
        "output_files": [
            {"format": "mp3", "filename": "Episode 42.mp3"},
            {"format": "mp3", "bitrate": 32, "suffix": "-lofi"},
            {"format": "wav", "filename": "master"},
        ]
    }
    result = engine.process(mono_speech, params, tmp_path, basename="ep42")
    assert [o.filename for o in result.outputs] == ["Episode 42.mp3", "ep42-lofi.mp3", "master.wav"]
    assert all(o.path.exists() for o in result.outputs)


def test_it_refuses_outputs_that_would_share_a_name(tmp_path, mono_speech):
    params = {"output_files": [{"format": "mp3"}, {"format": "mp3", "bitrate": 64}]}
    with pytest.raises(ParamsError, match=r"output_files\[1\].*already used"):
        engine.process(mono_speech, params, tmp_path)


# process: video


def test_it_extracts_a_trimmed_stretch_of_audio_from_a_video(tmp_path, video):
    params = {"output_files": [{"format": "mp3"}], "video": {"start_time": 2, "duration": 3}}
    result = engine.process(video, params, tmp_path, basename="clip")
    path = result.outputs[0].path
    facts = engine.probe(path)
    assert not facts.has_video
    assert facts.duration == pytest.approx(3.0, abs=0.1)
    assert probe_duration(path) == pytest.approx(3.0, abs=0.1)
    assert result.statistics["trim"] == {"start_time": 2.0, "duration": 3.0}


def test_it_extracts_to_the_end_and_normalises_a_video(tmp_path, video):
    params = {**PODCAST, "video": {"start_time": "5"}, "output_files": [{"format": "aac"}]}
    result = engine.process(video, params, tmp_path)
    path = result.outputs[0].path
    assert engine.probe(path).duration == pytest.approx(3.0, abs=0.1)
    assert ebur128(path)["integrated"] == pytest.approx(-16.0, abs=0.5)


def test_a_trimmed_wav_keeps_exactly_the_samples_asked_for(tmp_path, monkeypatch, quiet_speech):
    # WAV inputs are read in large packets (ffmpeg.demuxer_args); a trim must still start
    # and end on the exact sample, wherever it falls inside a packet.
    launched = spawned(monkeypatch)
    params = {
        "algorithms": {"filtering": False},
        "output_files": [{"format": "wav"}],
        "video": {"start_time": 2.5, "duration": 3},
    }
    result = engine.process(quiet_speech, params, tmp_path)
    assert launched and all("-max_size" in proc.args for proc in launched)
    source, output = read_pcm(quiet_speech), read_pcm(result.outputs[0].path)
    first = round(2.5 * 44100)
    assert output.shape == (3 * 44100, 2)
    assert (output == source[first : first + 3 * 44100]).all()


def test_it_refuses_a_start_time_past_the_end(tmp_path, video):
    with pytest.raises(EngineError, match="beyond the end"):
        engine.process(video, {"video": {"start_time": 60}}, tmp_path)


# progress and cancellation


def test_it_reports_progress_in_order(tmp_path, quiet_speech):
    calls: list[tuple[float, str]] = []
    engine.process(quiet_speech, PODCAST, tmp_path, progress=lambda f, s: calls.append((f, s)))
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(set(fractions)) >= 4
    stages = [stage for _, stage in calls]
    first = {stage: stages.index(stage) for stage in ("analysing", "encoding", "verifying")}
    assert first["analysing"] < first["encoding"] < first["verifying"]


def test_it_reports_progress_while_ffmpeg_runs(tmp_path, quiet_speech):
    long = tmp_path / "long.wav"
    ffmpeg("-stream_loop", "50", "-i", str(quiet_speech), "-c", "copy", str(long))  # ~10 min
    calls: list[tuple[float, str]] = []
    engine.measure(long, progress=lambda f, s: calls.append((f, s)))
    middle = [f for f, _ in calls if 0 < f < 1]
    assert middle, calls  # ffmpeg's -progress lines arrive before the end
    assert {stage for _, stage in calls} == {"analysing"}


@pytest.mark.parametrize("stage", ["analysing", "encoding", "verifying"])
def test_it_cancels_when_progress_says_no(tmp_path, quiet_speech, stage):
    def progress(fraction: float, current: str) -> bool:
        return current != stage

    out = tmp_path / "out"
    with pytest.raises(EngineCancelled):
        engine.process(quiet_speech, PODCAST, out, progress=progress)
    # No partial or finished output is left behind.
    assert not out.exists() or list(out.iterdir()) == []


def test_it_cancels_a_measurement(quiet_speech):
    with pytest.raises(EngineCancelled):
        engine.measure(quiet_speech, progress=lambda f, s: False)


# parameters


def test_it_normalises_parameters():
    params = engine.validate_params(
        {
            "algorithms": {"hipfilter": "true", "normloudness": True, "loudnesstarget": "-23"},
            "output_files": [{"format": "MP3", "bitrate": "96"}, {"format": "flac"}],
            "video": {"start_time": "1.5"},
        }
    )
    assert params["algorithms"] == {
        "filtering": True,
        "leveler": False,
        "normloudness": True,
        "loudnesstarget": -23.0,
        "maxpeak": -2.0,
        "denoise": False,
        "denoiseamount": None,
        "silence_cutter": False,
        "silence_threshold_s": None,
        "gate": False,
        "crossgate": False,
    }
    assert params["output_files"][0] == {
        "format": "mp3",
        "bitrate": 96,
        "filename": None,
        "suffix": "",
        "mono_mixdown": False,
    }
    assert params["output_files"][1]["bitrate"] is None
    assert params["video"] == {"start_time": 1.5, "duration": None}
    assert engine.validate_params(params) == params  # idempotent
    podcast = engine.validate_params({"algorithms": {"normloudness": True, "maxpeak": 0}})
    assert podcast["algorithms"]["loudnesstarget"] == -16.0
    assert podcast["algorithms"]["maxpeak"] == -1.0
    assert podcast["output_files"] == [
        {"format": "mp3", "bitrate": 128, "filename": None, "suffix": "", "mono_mixdown": False}
    ]


def test_it_rejects_an_unknown_output_format():
    with pytest.raises(ParamsError) as caught:
        engine.validate_params({"output_files": [{"format": "mp3"}, {"format": "wma"}]})
    assert isinstance(caught.value, ValueError)
    assert caught.value.errors == {
        "output_files[1].format": "unsupported format 'wma' (choose from mp3, mp3-vbr, vorbis, "
        "opus, aac, flac, alac, wav, wav-24bit, video, tracks)"
    }
    assert "output_files[1].format" in str(caught.value)


@pytest.mark.parametrize("target", [-40, -12, "loud"])
def test_it_rejects_a_loudness_target_out_of_range(target):
    with pytest.raises(ParamsError) as caught:
        engine.validate_params({"algorithms": {"normloudness": True, "loudnesstarget": target}})
    message = caught.value.errors["algorithms.loudnesstarget"]
    assert ("between -31 and -13 LUFS" in message) or ("must be a number" in message)
    assert str(caught.value).startswith("Invalid parameters: algorithms.loudnesstarget: ")


def test_it_lists_every_bad_key_at_once():
    with pytest.raises(ParamsError) as caught:
        engine.validate_params(
            {
                "algorithms": {"deverb": True, "denoise": False, "sparkle": 1, "maxpeak": 3},
                "output_files": [
                    {"format": "mp3", "bitrate": 1000, "filename": "../../etc/passwd"},
                    {"format": "wav", "colour": "red"},
                ],
                "video": {"start_time": -1, "duration": 0},
                "preset": "abc",
            }
        )
    assert set(caught.value.errors) == {
        "algorithms.deverb",
        "algorithms.sparkle",
        "algorithms.maxpeak",
        "output_files[0].bitrate",
        "output_files[0].filename",
        "output_files[1].colour",
        "video.start_time",
        "video.duration",
        "preset",
    }
    assert "not supported by the built-in engine" in caught.value.errors["algorithms.deverb"]


def test_it_uses_the_configured_ffmpeg(monkeypatch, settings, quiet_speech):
    settings.FFMPEG_BINARY = ""
    monkeypatch.setenv("FFMPEG_BINARY", "/nonexistent/ffmpeg")
    assert engine.ffmpeg_binary() == "/nonexistent/ffmpeg"
    with pytest.raises(EngineError, match="Could not start ffmpeg"):
        engine.measure(quiet_speech)
    settings.FFMPEG_BINARY = "/also/missing/ffmpeg"
    assert engine.ffmpeg_binary() == "/also/missing/ffmpeg"
