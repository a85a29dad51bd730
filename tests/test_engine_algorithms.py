"""The engine's algorithms and output formats, checked with independent meters (tests/media.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from media_jobs import engine
from media_jobs.engine import ParamsError
from tests.media import (
    audio_format,
    ebur128,
    make_alternating_speech,
    make_noisy,
    make_paused_speech,
    make_video,
    make_wav,
    probe_duration,
    snr_against,
    spawned,
    video_packets,
)

PODCAST = {"normloudness": True, "loudnesstarget": -16, "maxpeak": -1}
ALL_FORMATS = ["mp3", "mp3-vbr", "vorbis", "opus", "aac", "flac", "alac", "wav", "wav-24bit"]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("algorithms-media")


@pytest.fixture(scope="module")
def speech(media_dir) -> Path:
    return make_wav(media_dir / "speech.wav", seconds=10, level_db=-26)


@pytest.fixture(scope="module")
def loud_speech(media_dir) -> Path:
    # Overdriven: plosives clip at full scale, inter-sample peaks above 0 dBTP.
    return make_wav(media_dir / "loud.wav", seconds=8, level_db=-9)


def _on_target(path: Path, target: float = -16.0, ceiling: float = -1.0) -> dict[str, float]:
    measured = ebur128(path)
    assert measured["integrated"] == pytest.approx(target, abs=0.5), path.name
    assert measured["true_peak"] <= ceiling, path.name
    return measured


# leveler


def test_it_levels_loud_and_quiet_speakers(tmp_path, media_dir):
    source = make_alternating_speech(media_dir / "alternating.wav", seconds=64, segment=8)
    assert ebur128(source)["lra"] > 12  # -30 and -15 LUFS stretches
    params = {
        "algorithms": {"leveler": True, "filtering": True, **PODCAST},
        "output_files": [{"format": "wav"}],
    }
    result = engine.process(source, params, tmp_path)
    measured = _on_target(result.outputs[0].path)
    assert measured["lra"] <= 4.0
    assert result.statistics["algorithms"]["leveler"] is True


# denoise


@pytest.fixture(scope="module")
def noisy_speech(media_dir) -> tuple[Path, Path]:
    clean = make_wav(media_dir / "clean.wav", seconds=30, level_db=-20, codec="pcm_f32le")
    return clean, make_noisy(media_dir / "noisy.wav", clean, snr_db=15)


def test_it_denoises_speech_in_pink_noise(tmp_path, noisy_speech):
    clean, noisy = noisy_speech
    before = snr_against(clean, noisy)
    assert before == pytest.approx(15.0, abs=0.1)
    # Denoise alone: no gain, so the speech's level can be compared with the clean take.
    params = {"algorithms": {"denoise": True}, "output_files": [{"format": "wav"}]}
    result = engine.process(noisy, params, tmp_path)
    path = result.outputs[0].path
    after = snr_against(clean, path)
    assert after - before >= 6.0, (before, after)
    assert ebur128(path)["integrated"] == pytest.approx(ebur128(clean)["integrated"], abs=1.0)
    # afftdn's latency is compensated: same length, and the fit above found the speech unshifted.
    assert probe_duration(path) == pytest.approx(probe_duration(noisy), abs=0.01)
    assert result.statistics["algorithms"]["denoise"]["noise_floor"] < -20


def test_it_skips_denoise_without_a_pause_to_learn_from(tmp_path, media_dir):
    steady = make_wav(media_dir / "steady.wav", seconds=5, level_db=-20, kind="sine")
    params = {"algorithms": {"denoise": True}, "output_files": [{"format": "wav"}]}
    result = engine.process(steady, params, tmp_path)
    assert "denoise was skipped" in result.statistics["warnings"][0]
    assert ebur128(result.outputs[0].path)["integrated"] == pytest.approx(-20.0, abs=0.2)


# silence cutter


def test_it_cuts_long_pauses(tmp_path, media_dir):
    # 4 x 5 s of speech, 3 s pauses in between: each pause is shortened to 1 s.
    source = make_paused_speech(media_dir / "paused.wav", segments=4, speech=5, pause=3)
    before = probe_duration(source)
    assert before == pytest.approx(29.0, abs=0.05)
    params = {
        "algorithms": {"silence_cutter": True, "silence_threshold_s": 1.0, **PODCAST},
        "output_files": [{"format": "flac"}],
    }
    result = engine.process(source, params, tmp_path)
    path = result.outputs[0].path
    removed = 3 * (3.0 - 1.0)
    assert before - probe_duration(path) == pytest.approx(removed, rel=0.05)
    assert result.statistics["algorithms"]["silence_cut"] == pytest.approx(removed, rel=0.05)
    _on_target(path)


def test_it_refuses_to_cut_silence_out_of_a_video():
    with pytest.raises(ParamsError) as caught:
        engine.validate_params(
            {"algorithms": {"silence_cutter": True}, "output_files": [{"format": "video"}]}
        )
    assert "cannot go back into the video" in caught.value.errors["algorithms.silence_cutter"]


# hum


def test_it_notches_mains_hum_only_when_there_is_some(tmp_path, speech, media_dir):
    hum = media_dir / "hum-tone.wav"
    from tests.media import ffmpeg, mix

    ffmpeg(
        "-f", "lavfi", "-i",
        "aevalsrc='0.02*(sin(2*PI*50*t)+0.7*sin(2*PI*100*t)+0.5*sin(2*PI*150*t))':s=44100:d=10",
        "-ac", "2", "-c:a", "pcm_f32le", str(hum),
    )  # fmt: skip
    hummy = mix(media_dir / "hummy.wav", speech, hum)
    params = {"algorithms": {"filtering": True, **PODCAST}, "output_files": [{"format": "wav"}]}
    clean_run = engine.process(speech, params, tmp_path / "clean")
    hum_run = engine.process(hummy, params, tmp_path / "hum")
    assert clean_run.statistics["algorithms"]["hum"] is None
    assert hum_run.statistics["algorithms"]["hum"] == 50
    _on_target(hum_run.outputs[0].path)


# normalisation in every format


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("material", ["speech", "loud_speech"])
def test_it_normalises_every_format(tmp_path, request, fmt, material):
    source = request.getfixturevalue(material)
    params = {"algorithms": {"filtering": True, **PODCAST}, "output_files": [{"format": fmt}]}
    result = engine.process(source, params, tmp_path)
    [output] = result.outputs
    _on_target(output.path)
    facts = audio_format(output.path)
    assert facts["rate"] == (48000 if fmt == "opus" else 44100)
    assert facts["channels"] == 2
    expected = {
        "mp3": "mp3", "mp3-vbr": "mp3", "vorbis": "vorbis", "opus": "opus", "aac": "aac",
        "flac": "flac", "alac": "alac", "wav": "pcm_s16le", "wav-24bit": "pcm_s24le",
    }  # fmt: skip
    assert facts["codec"] == expected[fmt]
    if fmt == "wav-24bit":
        assert facts["bits"] == 24
    if fmt in {"wav", "flac", "alac"}:
        assert facts["bits"] == 16


def test_it_writes_vbr_mp3(tmp_path, speech):
    params = {
        "output_files": [
            {"format": "mp3-vbr", "bitrate": 190},
            {"format": "mp3", "suffix": "-cbr"},
        ]
    }
    result = engine.process(speech, params, tmp_path, basename="talk")
    vbr, cbr = result.outputs
    assert (vbr.filename, cbr.filename) == ("talk.mp3", "talk-cbr.mp3")
    # LAME tags a VBR stream's first frame "Xing", a CBR one's "Info".
    assert b"Xing" in vbr.path.read_bytes()[:4096]
    assert b"Info" in cbr.path.read_bytes()[:4096]


# mono mixdown


def test_it_mixes_down_to_mono_on_target(tmp_path, speech):
    params = {
        "algorithms": {**PODCAST, "loudnesstarget": -19},
        "output_files": [{"format": "mp3", "mono_mixdown": True}, {"format": "wav"}],
    }
    result = engine.process(speech, params, tmp_path)
    mono, stereo = result.outputs
    assert audio_format(mono.path)["channels"] == 1
    assert audio_format(stereo.path)["channels"] == 2
    _on_target(mono.path, target=-19)
    _on_target(stereo.path, target=-19)
    assert result.statistics["renders"] == 1  # the downmix was measured in pass 1


# video


@pytest.fixture(scope="module")
def clip(media_dir) -> Path:
    return make_video(media_dir / "clip.mp4", seconds=6)


def test_it_muxes_the_processed_audio_back_into_the_video(tmp_path, clip):
    params = {
        "algorithms": {"filtering": True, **PODCAST},
        "output_files": [{"format": "video"}, {"format": "mp3"}],
    }
    result = engine.process(clip, params, tmp_path, basename="clip")
    video, mp3 = result.outputs
    assert video.filename == "clip.mp4"
    assert video_packets(video.path) == video_packets(clip)  # stream copied, bit for bit
    facts = audio_format(video.path)
    assert (facts["container"].split(",")[0], facts["codec"]) == ("mov", "aac")
    _on_target(video.path)
    _on_target(mp3.path)


def test_it_refuses_a_video_output_for_audio(tmp_path, speech):
    with pytest.raises(engine.EngineError, match="no video stream"):
        engine.process(speech, {"output_files": [{"format": "video"}]}, tmp_path)


# parameters


@pytest.mark.parametrize("name", ["filler_cutter", "cough_cutter"])
def test_it_refuses_cutters_that_need_a_speech_model(name):
    with pytest.raises(ParamsError) as caught:
        engine.validate_params({"algorithms": {name: True}})
    assert caught.value.errors == {
        f"algorithms.{name}": f"{name} needs a speech model the built-in engine does not ship; "
        "use the auphonic provider"
    }
    # Switched off, Auphonic presets that carry them are fine.
    assert engine.validate_params({"algorithms": {name: False}})


def test_it_validates_the_algorithm_set():
    params = engine.validate_params(
        {
            "algorithms": {
                "leveler": "true", "denoise": True, "denoiseamount": "12", "silence_cutter": 1,
                "gate": True, "crossgate": False, "normloudness": True, "maxpeak": 0,
                "loudnesstarget": -20,
            },
            "output_files": [
                {"format": "mp3", "mono_mixdown": True},
                {"format": "tracks", "ending": "flac.zip"},
            ],
            "metadata": {"title": "T"},
            "chapters": [{"start": "00:00:00", "title": "Intro"}],
            "is_multitrack": True,
            "multi_input_files": [{"type": "multitrack", "id": "a"}],
        }
    )  # fmt: skip
    algorithms = params["algorithms"]
    assert algorithms["leveler"] and algorithms["denoise"] and algorithms["silence_cutter"]
    assert algorithms["denoiseamount"] == 12.0
    assert algorithms["silence_threshold_s"] == 1.0
    assert algorithms["maxpeak"] == -2.0  # automatic under -18 LUFS
    assert (algorithms["gate"], algorithms["crossgate"]) == (True, False)
    assert params["output_files"][0]["mono_mixdown"] is True
    assert params["output_files"][1] == {"format": "tracks", "ending": "flac.zip"}
    assert params["metadata"] == {"title": "T"}
    assert params["chapters"] == [{"start": "00:00:00", "title": "Intro"}]
    assert params["is_multitrack"] is True
    assert params["multi_input_files"] == [{"type": "multitrack", "id": "a"}]
    assert engine.validate_params(params) == params


def test_it_lists_bad_algorithm_settings():
    with pytest.raises(ParamsError) as caught:
        engine.validate_params(
            {
                "algorithms": {
                    "denoiseamount": 120, "silence_threshold_s": 0.01, "sparkle": True,
                    "denoisemethod": "speech_isolation",
                },
                "output_files": [{"format": "tracks", "ending": "mp3.zip"}],
            }
        )  # fmt: skip
    assert set(caught.value.errors) == {
        "algorithms.denoiseamount",
        "algorithms.silence_threshold_s",
        "algorithms.sparkle",
        "algorithms.denoisemethod",
        "output_files[0].ending",
    }


# one decode for every output


def test_it_renders_every_output_in_one_ffmpeg_run(tmp_path, speech, monkeypatch):
    launched = spawned(monkeypatch)
    params = {
        "algorithms": {"filtering": True, **PODCAST},
        "output_files": [{"format": "mp3"}, {"format": "flac"}, {"format": "opus"}],
    }
    result = engine.process(speech, params, tmp_path)
    assert result.statistics["renders"] == 1
    renders = [proc.args for proc in launched if "-dec" in proc.args]
    # Pass 1 measures; one render encodes all three outputs and verifies them.
    assert len(launched) == 2
    assert len(renders) == 1
    assert sum(arg.startswith("file:") for arg in renders[0]) == 1 + 3
