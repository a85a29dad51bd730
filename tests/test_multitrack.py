"""Intro/outro joins and multitrack mixdowns, checked with an independent ffmpeg meter."""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import pytest

from media_jobs import samples
from media_jobs.engine import EngineCancelled, ParamsError, process
from media_jobs.engine.multitrack import (
    InputSpec,
    prepare,
    process_params,
    track_formats,
    validate_multi_inputs,
    zip_tracks,
)
from tests.media import ebur128, ffmpeg, probe_duration, spawned

PODCAST = {
    "algorithms": {"filtering": True, "normloudness": True, "loudnesstarget": -16, "maxpeak": -1},
    "output_files": [{"format": "mp3", "bitrate": 128}],
}
RATE = 48000
LENGTH = 25  # seconds of every speech track
NOISE_RMS_DB = -60.0


def _scale_to(raw: Path, path: Path, lufs: float, codec: str = "pcm_s16le") -> Path:
    """Write raw scaled to an integrated loudness of lufs, measured independently."""
    gain = lufs - ebur128(raw)["integrated"]
    ffmpeg("-i", str(raw), "-af", f"volume={gain:.3f}dB", "-c:a", codec, str(path))
    raw.unlink()
    return path


def _tone(path: Path, seconds: float, lufs: float, rate: int, layout: str) -> Path:
    """Write a steady two-sine tone at an integrated loudness of lufs."""
    raw = path.with_suffix(".raw.wav")
    expr = "0.2*sin(2*PI*440*t)+0.1*sin(2*PI*660*t)"
    channels = expr if layout == "mono" else f"{expr}|{expr}"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc={channels}:s={rate}:d={seconds}", str(raw))
    return _scale_to(raw, path, lufs)


def _voice(pitch: float) -> str:
    """Return a continuous speech-like expression: a gliding voice in 4 Hz syllables.

    No phrase pauses: a talker's segment is speech from end to end, so what the ducking does
    "during speech" is not averaged with what it does in the talker's breaths.
    """
    phase = f"(2*PI*{pitch}*t-40*cos(PI*t))"
    voice = f"(sin({phase})+0.6*sin(2*{phase})+0.4*sin(3*{phase}))"
    return f"0.15*{voice}*(0.35+0.65*pow(max(0,sin(2*PI*4*t)),2))"


# A talks in 0-5 s and 10-15 s, B in 5-10 s and 15-20 s; from 20 s on nobody does.
A_TALKS = "(between(t,0,5)+between(t,10,15))"
B_TALKS = "(between(t,5,10)+between(t,15,20))"


def _speech_track(path: Path, own: str, talks: str, *, bleed: str = "", seed: int) -> Path:
    """Write a mono speech track: its talker, optional bleed of the other, room noise at -60."""
    expr = f"{own}*gt({talks},0)"
    if bleed:
        expr += f"+{bleed}"
    # White noise uniform in [-a, a] has an RMS of a/sqrt(3).
    amplitude = 10 ** (NOISE_RMS_DB / 20) * 3**0.5
    noise = f"anoisesrc=color=white:a={amplitude:.6f}:seed={seed}:r={RATE}:d={LENGTH}"
    ffmpeg(
        "-f", "lavfi", "-i", f"aevalsrc='{expr}':s={RATE}:d={LENGTH}", "-f", "lavfi", "-i", noise,
        "-filter_complex", "[0][1]amix=inputs=2:normalize=0", "-c:a", "pcm_s24le", str(path),
    )  # fmt: skip
    return path


def _rms(path: Path, start: float, seconds: float) -> float:
    """Return the power (dBFS, channels summed, as loudness sums them) of a stretch of a file.

    Summing the channels makes a mono track and its centred stereo copy (each channel 3 dB
    down) read the same.
    """
    stderr = ffmpeg(
        "-ss", str(start), "-t", str(seconds), "-i", str(path), "-map", "0:a:0",
        "-af", "astats=measure_perchannel=RMS_level:measure_overall=none", "-f", "null", "-",
    )  # fmt: skip
    levels = [float(v) for v in re.findall(r"RMS level dB:\s+(-?[\d.]+|-inf)", stderr)]
    power = sum(10 ** (level / 10) for level in levels)
    return 10 * math.log10(power) if power else -math.inf


def _segment_loudness(path: Path, start: float, seconds: float, tmp: Path) -> float:
    """Return the integrated loudness of a stretch, cut out with ffmpeg -ss/-t."""
    cut = tmp / f"cut-{start:g}-{seconds:g}.wav"
    ffmpeg("-ss", str(start), "-t", str(seconds), "-i", str(path), "-c:a", "pcm_f32le", str(cut))
    return ebur128(cut)["integrated"]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("multitrack-media")


@pytest.fixture(scope="module")
def tracks(media_dir) -> dict[str, Path]:
    """Two alternating talkers in room noise, and a music bed (stereo, 44.1 kHz, 24 s)."""
    a = _speech_track(media_dir / "a.wav", _voice(140), A_TALKS, seed=1)
    b = _speech_track(media_dir / "b.wav", _voice(210), B_TALKS, seed=2)
    music = media_dir / "music.wav"
    chord = "0.05*sin(2*PI*330*t)+0.05*sin(2*PI*495*t)+0.03*sin(2*PI*247*t)"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc={chord}|{chord}:s=44100:d=24", str(music))
    return {"a": a, "b": b, "music": music}


@pytest.fixture(scope="module")
def bleeding_tracks(media_dir) -> dict[str, Path]:
    """The two talkers, each microphone also picking up the other 15 dB down."""
    bleed = 10 ** (-15 / 20)
    a = _speech_track(
        media_dir / "a-bleed.wav", _voice(140), A_TALKS,
        bleed=f"{bleed:.4f}*{_voice(210)}*gt({B_TALKS},0)", seed=3,
    )  # fmt: skip
    b = _speech_track(
        media_dir / "b-bleed.wav", _voice(210), B_TALKS,
        bleed=f"{bleed:.4f}*{_voice(140)}*gt({A_TALKS},0)", seed=4,
    )  # fmt: skip
    return {"a": a, "b": b}


# Intro and outro


@pytest.fixture(scope="module")
def intro_main_outro(media_dir) -> tuple[Path, Path, Path]:
    intro = _tone(media_dir / "intro.wav", 3, -30, 48000, "mono")
    raw = samples.speech_like(media_dir / "main.raw.wav", seconds=10, channels=2, rate=44100)
    main = _scale_to(raw, media_dir / "main.wav", -20)
    outro = _tone(media_dir / "outro.wav", 3, -12, 44100, "stereo")
    return intro, main, outro


def test_it_joins_intro_and_outro_at_the_mains_loudness(tmp_path, intro_main_outro):
    intro, main, outro = intro_main_outro
    seen: list[float] = []
    prepared = prepare(
        main,
        [InputSpec("intro", intro), InputSpec("outro", outro, id="sign-off")],
        {**PODCAST, "multi_input_files": [{"type": "intro"}, {"type": "outro"}]},
        tmp_path / "work",
        progress=lambda fraction, stage: seen.append(fraction),
    )

    assert prepared.duration == pytest.approx(16.0, abs=0.1)
    assert probe_duration(prepared.path) == pytest.approx(16.0, abs=0.1)
    main_loudness = _segment_loudness(prepared.path, 3, 10, tmp_path)
    assert main_loudness == pytest.approx(-20, abs=0.5)  # the main itself is not touched
    assert _segment_loudness(prepared.path, 0, 3, tmp_path) == pytest.approx(main_loudness, abs=1)
    assert _segment_loudness(prepared.path, 13, 3, tmp_path) == pytest.approx(main_loudness, abs=1)
    segments = {s["type"]: s for s in prepared.statistics["segments"]}
    assert segments["intro"]["gain"] == pytest.approx(10, abs=0.5)
    assert segments["outro"]["gain"] == pytest.approx(-8, abs=0.5)
    assert segments["outro"]["id"] == "sign-off"
    assert prepared.statistics["sample_rate"] == 44100  # the main's rate and layout
    assert prepared.statistics["channels"] == 2
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert "multi_input_files" not in prepared.params

    result = process(prepared.path, prepared.params, tmp_path / "out", basename="episode")
    final = ebur128(result.outputs[0].path)
    assert final["integrated"] == pytest.approx(-16, abs=0.5)
    assert final["true_peak"] <= -1.0
    assert probe_duration(result.outputs[0].path) == pytest.approx(16.0, abs=0.15)


def test_it_overlaps_an_intro_by_its_offset(tmp_path, intro_main_outro):
    intro, main, _ = intro_main_outro
    prepared = prepare(main, [InputSpec("intro", intro, offset=1.0)], {}, tmp_path)
    assert prepared.duration == pytest.approx(12.0, abs=0.1)


def test_it_applies_the_trim_to_the_main_only(tmp_path, monkeypatch, intro_main_outro):
    intro, main, outro = intro_main_outro
    launched = spawned(monkeypatch)
    params = {"video": {"start_time": 2, "duration": 5}}
    prepared = prepare(
        main, [InputSpec("intro", intro), InputSpec("outro", outro)], params, tmp_path
    )
    assert prepared.duration == pytest.approx(11.0, abs=0.1)
    # Every WAV is read in large packets (ffmpeg.input_args), the trimmed main included.
    commands = [proc.args for proc in launched]
    reads = [cmd for cmd in commands if any(arg.endswith(".wav") for arg in cmd)]
    assert reads and all("-max_size" in cmd for cmd in reads)
    assert "video" not in prepared.params  # process() must not trim the joined file again


def test_it_passes_a_lone_main_through(tmp_path, intro_main_outro):
    _, main, _ = intro_main_outro
    prepared = prepare(main, [], {"output_files": [{"format": "mp3"}]}, tmp_path)
    assert prepared.path == main
    assert prepared.tracks == []


# Multitrack


def test_it_mixes_gates_and_ducks_tracks(tmp_path, tracks):
    seen: list[float] = []
    params = {
        "is_multitrack": True,
        "algorithms": {"gate": True, "normloudness": True},
        "output_files": [{"format": "mp3"}, {"format": "tracks", "ending": "wav.zip"}],
    }
    specs = [
        InputSpec("multitrack", tracks["a"], id="Anna"),
        InputSpec("multitrack", tracks["b"], id="Ben"),
        # "auto" with "music" in the id: background.
        InputSpec("multitrack", tracks["music"], id="theme music", offset=2.0),
    ]
    prepared = prepare(None, specs, params, tmp_path / "work", progress=lambda f, s: seen.append(f))

    # The mixdown lasts as long as the longest track with its offset: 2 + 24 s.
    assert prepared.duration == pytest.approx(26.0, abs=0.05)
    assert probe_duration(prepared.path) == pytest.approx(26.0, abs=0.05)
    assert prepared.statistics["sample_rate"] == RATE
    assert prepared.statistics["channels"] == 2
    stats = {t["id"]: t for t in prepared.statistics["tracks"]}
    assert [stats[name]["role"] for name in ("Anna", "Ben", "theme music")] == [
        "foreground", "foreground", "background",
    ]  # fmt: skip
    assert stats["Anna"]["noise_floor"] == pytest.approx(NOISE_RMS_DB, abs=2)
    assert stats["Anna"]["gate"] and not stats["theme music"]["gate"]
    assert seen == sorted(seen) and seen[-1] == 1.0

    anna, ben, music = prepared.tracks
    # Gate: Anna's room noise while Ben talks drops by 10 dB or more; her speech stays.
    assert _rms(tracks["a"], 6, 3) - _rms(anna, 6, 3) >= 10
    assert _rms(anna, 1, 3) == pytest.approx(_rms(tracks["a"], 1, 3), abs=1)
    assert _rms(tracks["b"], 21, 3) - _rms(ben, 21, 3) >= 10
    # Ducking: the music under speech sits 6 dB or more under the music in the pause,
    # which keeps its own level.
    in_pause = _rms(music, 21.5, 3)
    assert in_pause == pytest.approx(_rms(tracks["music"], 19.5, 3), abs=1)
    assert in_pause - _rms(music, 3, 1.5) >= 6
    assert in_pause - _rms(music, 11, 3) >= 6
    # The mixdown is the plain sum of the track files (amix normalize=0).
    assert _rms(prepared.path, 21.5, 3) == pytest.approx(in_pause, abs=0.5)

    assert prepared.track_formats == ["wav"]
    zipped = zip_tracks(prepared.tracks, tmp_path / "episode.wav.zip", "wav")
    with zipfile.ZipFile(zipped) as archive:
        names = archive.namelist()
        assert sorted(names) == ["Anna.wav", "Ben.wav", "theme music.wav"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        archive.extractall(tmp_path / "unzipped")
    for name in names:
        assert probe_duration(tmp_path / "unzipped" / name) == pytest.approx(26.0, abs=0.05)

    result = process(prepared.path, prepared.params, tmp_path / "out")
    assert ebur128(result.outputs[0].path)["integrated"] == pytest.approx(-16, abs=0.5)


def test_it_removes_crosstalk_with_the_crossgate(tmp_path, bleeding_tracks):
    # Quotes, colons, commas and brackets in the path must survive the filtergraph.
    workdir = tmp_path / "it's [a]: b, c; d"
    specs = [
        InputSpec("multitrack", bleeding_tracks["a"], id="a"),
        InputSpec("multitrack", bleeding_tracks["b"], id="b", algorithms={"denoise": True}),
    ]
    params = {"is_multitrack": True, "algorithms": {"crossgate": True}}
    prepared = prepare(None, specs, params, workdir, tracks=True)

    assert prepared.statistics["channels"] == 1  # mono tracks make a mono mix
    # The levels file ametadata wrote under that path was found and read.
    assert prepared.statistics["tracks"][0]["noise_floor"] == pytest.approx(NOISE_RMS_DB, abs=2)
    a, b = prepared.tracks
    # While B talks, A's microphone only carries B's bleed: the crossgate takes it down.
    assert _rms(bleeding_tracks["a"], 6, 3) - _rms(a, 6, 3) >= 10
    assert _rms(bleeding_tracks["b"], 11, 3) - _rms(b, 11, 3) >= 10
    # While A talks, A is left as it was.
    assert _rms(a, 1, 3) == pytest.approx(_rms(bleeding_tracks["a"], 1, 3), abs=1)
    assert prepared.duration == pytest.approx(LENGTH, abs=0.05)

    flac = zip_tracks(prepared.tracks, tmp_path / "t.flac.zip", "flac.zip", gain_db=-3)
    with zipfile.ZipFile(flac) as archive:
        assert sorted(archive.namelist()) == ["a.flac", "b.flac"]


def test_it_levels_tracks_and_puts_an_intro_before_the_mixdown(tmp_path, tracks, intro_main_outro):
    quiet = tmp_path / "quiet-b.wav"
    ffmpeg("-i", str(tracks["b"]), "-af", "volume=-10dB", "-c:a", "pcm_s24le", str(quiet))
    specs = [
        InputSpec("intro", intro_main_outro[0]),
        InputSpec("multitrack", tracks["a"], id="a"),
        InputSpec("multitrack", quiet, id="b"),
    ]
    params = {"is_multitrack": True, "algorithms": {"leveler": True}}
    prepared = prepare(None, specs, params, tmp_path / "work")

    stats = {t["id"]: t for t in prepared.statistics["tracks"]}
    assert stats["b"]["leveler_gain"] == pytest.approx(5, abs=0.5)
    assert stats["a"]["leveler_gain"] == pytest.approx(-5, abs=0.5)
    assert stats["a"]["after"]["integrated"] == pytest.approx(
        stats["b"]["after"]["integrated"], abs=0.5
    )
    assert prepared.duration == pytest.approx(3 + LENGTH, abs=0.1)
    segments = {s["type"]: s for s in prepared.statistics["segments"]}
    mixdown = segments["mixdown"]["before"]["integrated"]
    assert _segment_loudness(prepared.path, 0, 3, tmp_path) == pytest.approx(mixdown, abs=1)
    assert prepared.params == {"algorithms": {"leveler": True}}
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["prepared.wav"]


def test_it_cancels_a_mixdown(tmp_path, tracks):
    specs = [
        InputSpec("multitrack", tracks["a"], id="a"),
        InputSpec("multitrack", tracks["b"], id="b"),
    ]
    with pytest.raises(EngineCancelled):
        prepare(None, specs, {"is_multitrack": True}, tmp_path, progress=lambda f, s: f < 0.2)
    assert not (tmp_path / "prepared.wav").exists()


# Validation


@pytest.mark.parametrize(
    ("entries", "key", "message"),
    [
        (
            [{"type": "intro"}, {"type": "intro"}],
            "multi_input_files[1].type",
            "at most one intro",
        ),
        (
            [{"type": "outro"}, {"type": "outro"}],
            "multi_input_files[1].type",
            "at most one outro",
        ),
        ([{"type": "multitrack", "id": "solo"}], "multi_input_files", "at least 2 tracks"),
        ([{"type": "chapter"}], "multi_input_files[0].type", "must be one of"),
        (
            [{"type": "multitrack", "id": "x"}, {"type": "multitrack", "id": "x"}],
            "multi_input_files[1].id",
            "duplicate id 'x'",
        ),
        (
            [{"type": "multitrack", "id": "x"}, {"type": "multitrack"}],
            "multi_input_files[1].id",
            "needs an id",
        ),
        (
            [
                {"type": "multitrack", "id": "x", "algorithms": {"backforeground": "loud"}},
                {"type": "multitrack", "id": "y"},
            ],
            "multi_input_files[0].algorithms.backforeground",
            "must be one of",
        ),
        ([{"type": "intro", "offset": -1}], "multi_input_files[0].offset", "between 0"),
        (
            [{"type": "intro", "algorithms": {"denoise": True}}],
            "multi_input_files[0].algorithms",
            "only multitrack",
        ),
        ("intro", "multi_input_files", "must be a list"),
    ],
)
def test_it_rejects_bad_multi_inputs(entries, key, message):
    with pytest.raises(ParamsError) as caught:
        validate_multi_inputs(entries)
    assert message in caught.value.errors[key]
    assert isinstance(caught.value, ValueError)


def test_it_checks_is_multitrack_against_the_tracks():
    tracks = [{"type": "multitrack", "id": "a"}, {"type": "multitrack", "id": "b"}]
    with pytest.raises(ParamsError, match="is_multitrack"):
        validate_multi_inputs(tracks, is_multitrack=False)
    with pytest.raises(ParamsError, match="is_multitrack"):
        validate_multi_inputs([{"type": "intro"}], is_multitrack=True)


def test_it_normalises_multi_inputs():
    entries = validate_multi_inputs(
        [
            {"type": "intro", "input_file": "intro.mp3", "service": "dropbox"},
            {"type": "multitrack", "id": " speech ", "algorithms": {"hipfilter": "false"}},
            {
                "type": "multitrack",
                "id": "music",
                "offset": "1.5",
                "algorithms": {"backforeground": "Background", "denoiseamount": 6},
            },
        ]
    )
    assert entries[0] == {
        "type": "intro", "id": "", "offset": 0.0, "algorithms": {},
        "input_file": "intro.mp3", "service": "dropbox",
    }  # fmt: skip
    assert entries[1]["id"] == "speech"
    assert entries[1]["algorithms"] == {"filtering": False}
    assert entries[2]["offset"] == 1.5
    assert entries[2]["algorithms"] == {"backforeground": "background", "denoiseamount": 6.0}


def test_it_strips_what_preparing_consumed_from_the_process_params():
    params = {
        "is_multitrack": True,
        "multi_input_files": [],
        "algorithms": {"gate": True, "crossgate": True, "filtering": True, "leveler": True},
        "output_files": [{"format": "mp3"}, {"format": "tracks", "ending": "flac.zip"}],
        "video": {"start_time": 1},
    }
    assert track_formats(params) == ["flac"]
    stripped = process_params(params, multitrack=True, joined=False)
    assert stripped == {
        "algorithms": {"leveler": True},
        "output_files": [{"format": "mp3"}],
        "video": {"start_time": 1},
    }
    assert "gate" in params["algorithms"]  # the caller's dict is left alone
    with pytest.raises(ParamsError, match=r"wav\.zip or flac\.zip"):
        track_formats({"output_files": [{"format": "tracks", "ending": "mp3.zip"}]})
