"""Tags, cover art and chapter marks: written into every output format, read back exactly."""

from __future__ import annotations

import base64
import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import av
import pytest
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, CTOCFlags, Frame, PictureType, TextFrame, UrlFrame
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from media_jobs.engine import ParamsError, ffmpeg_binary
from media_jobs.engine.chapters import Chapter, chapters_text, fill_ends, parse_chapters
from media_jobs.engine.tags import (
    read_av_chapters,
    read_chapters,
    read_cover,
    read_tags,
    validate_metadata,
    write_tags,
)

SECONDS = 20
# A tone under noise: lossy encoders have something to chew on, decoders something to hash.
AUDIO_SOURCE = [
    "-f", "lavfi", "-i", f"sine=f=440:r=48000:d={SECONDS}",
    "-f", "lavfi", "-i", f"anoisesrc=r=48000:a=0.05:seed=7:d={SECONDS}",
    "-filter_complex", "[0][1]amix=inputs=2,aformat=channel_layouts=stereo[a]", "-map", "[a]",
]  # fmt: skip
VIDEO_SOURCE = ["-f", "lavfi", "-i", f"testsrc=s=160x120:r=25:d={SECONDS}"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]

# (file name, format name for write_tags, ffmpeg output options): the engine's encoders.
CASES = {
    "mp3": ("out.mp3", "mp3", ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"]),
    "mp3-vbr": ("out-vbr.mp3", "mp3-vbr", ["-c:a", "libmp3lame", "-q:a", "4", "-f", "mp3"]),
    "vorbis": ("out.ogg", "vorbis", ["-c:a", "libvorbis", "-q:a", "3", "-f", "ogg"]),
    "opus": ("out.opus", "opus", ["-c:a", "libopus", "-b:a", "64k", "-f", "opus"]),
    "aac": ("out.m4a", "aac", ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", "-f", "ipod"]),  # noqa: E501
    "alac": ("out-alac.m4a", "alac", ["-c:a", "alac", "-movflags", "+faststart", "-f", "ipod"]),
    "flac": ("out.flac", "flac", ["-c:a", "flac", "-sample_fmt", "s16", "-f", "flac"]),
    "wav": ("out.wav", "wav", ["-c:a", "pcm_s16le", "-rf64", "auto", "-f", "wav"]),
    "wav-24bit": ("out24.wav", "wav-24bit", ["-c:a", "pcm_s24le", "-rf64", "auto", "-f", "wav"]),
    "video-mp4": ("clip.mp4", "video", [*H264, "-c:a", "aac", "-shortest", "-f", "mp4"]),
    "video-mkv": ("clip.mkv", "video", [*H264, "-c:a", "libopus", "-shortest", "-f", "matroska"]),
    "video-webm": (
        "clip.webm", "video",
        ["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus", "-shortest", "-f", "webm"],
    ),
}  # fmt: skip
CONTAINER = {
    "mp3": "id3",
    "mp3-vbr": "id3",
    "wav": "wav",
    "wav-24bit": "wav",
    "vorbis": "ogg",
    "opus": "opus",
    "flac": "flac",
    "aac": "mp4",
    "alac": "mp4",
    "video-mp4": "mp4",
    "video-mkv": "matroska",
    "video-webm": "matroska",
}

META: dict[str, Any] = {
    "title": "Grüße aus Köln 🎙️ - Folge 7",
    "artist": "Jürgen Öztürk",
    "album": "Straßen-Podcast",
    "track": 7,
    "subtitle": "Über Umlaute & Emoji 😀",
    "summary": "Eine Folge über Ä, Ö und Ü.\nZweite Zeile mit 🚀.",
    "genre": "Podcast",
    "year": 2024,
    "publisher": "Verlag = Test; #1 \\o/",
    "url": "https://example.com/folge-7?x=1&y=2",
    "license": "Creative Commons Attribution 4.0",
    "license_url": "https://creativecommons.org/licenses/by/4.0/",
    "tags": ["podcast", "Küche", "🎙 audio"],
    "append_chapters": True,
    "location": {"latitude": "47.07", "longitude": 15.439},
}
# FFMETADATA's special characters (= ; # \) in a title check the escaping of the remux path.
CHAPTERS_TEXT = """\
00:00:00 Intro: Grüße <https://example.com/intro?a=1&b=2>
00:05.5 Zweites Kapitel 🎧
00:00:12.345 Outro; #3 = \\ Ende
"""
SUMMARY = (
    "Eine Folge über Ä, Ö und Ü.\nZweite Zeile mit 🚀.\n\n"
    "00:00:00.000 Intro: Grüße <https://example.com/intro?a=1&b=2>\n"
    "00:00:05.500 Zweites Kapitel 🎧\n"
    "00:00:12.345 Outro; #3 = \\ Ende"
)
KEYWORDS = "podcast, Küche, 🎙 audio"
INTRO_URL = "https://example.com/intro?a=1&b=2"
EXPECTED_CHAPTERS = [
    (0, "Intro: Grüße", INTRO_URL),
    (5500, "Zweites Kapitel 🎧", ""),
    (12345, "Outro; #3 = \\ Ende", ""),
]


def _run(*args: str) -> str:
    """Run ffmpeg and return its stdout; fail with its stderr."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _audio_md5(path: Path) -> tuple[str, str]:
    """Return md5s of the first audio stream's packets (bit for bit) and of its decoded PCM."""
    packets = _run("-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "md5", "-")
    decoded = _run("-i", str(path), "-map", "0:a:0", "-f", "md5", "-")
    return packets.strip(), decoded.strip()


def _stream_types(path: Path) -> list[str]:
    """Return the stream types ffmpeg sees; an embedded cover shows as a "cover" stream."""
    with av.open(str(path)) as container:
        return [
            "cover" if stream.disposition & av.stream.Disposition.attached_pic else stream.type
            for stream in container.streams
        ]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Encode the 20 s source once into every format."""
    folder = tmp_path_factory.mktemp("tag-sources")
    wav = folder / "source.wav"
    _run(*AUDIO_SOURCE, "-c:a", "pcm_s16le", str(wav))
    made = {}
    for case, (name, _, options) in CASES.items():
        if case.startswith("video"):
            inputs = [*VIDEO_SOURCE, "-i", str(wav), "-map", "0:v", "-map", "1:a"]
        else:
            inputs = ["-i", str(wav)]
        _run(*inputs, *options, str(folder / name))
        made[case] = folder / name
    return made


@pytest.fixture(scope="module")
def cover(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cover") / "cover.png"
    _run("-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", str(path))
    return path


def _copy(sources: dict[str, Path], case: str, tmp_path: Path) -> Path:
    target = tmp_path / sources[case].name
    shutil.copy(sources[case], target)
    return target


# What each container must hold, spelled out here independently of tags.py's tables.


def _id3_view(tags: ID3) -> dict[str, Any]:
    """Return every frame of an ID3 tag as plain values, keyed by frame id (in file order)."""
    view: dict[str, Any] = {}
    for frame in tags.values():
        view.setdefault(frame.FrameID, []).append(_frame_value(frame))
    # mutagen keeps frames in a dict: CHAP order is the CTOC's business, not the file's.
    return {key: sorted(values, key=repr) for key, values in view.items()}


def _frame_value(frame: Frame) -> Any:
    kind = frame.FrameID
    if kind == "COMM":
        return (frame.lang, frame.desc, [str(t) for t in frame.text])
    if kind == "WXXX":
        return (frame.desc, frame.url)
    if kind == "APIC":
        return (frame.mime, frame.type, frame.desc, bytes(frame.data))
    if kind == "CTOC":
        return (frame.element_id, frame.flags, list(frame.child_element_ids), len(frame.sub_frames))
    if kind == "CHAP":
        subs = sorted((f.FrameID, _frame_value(f)) for f in frame.sub_frames.values())
        return (frame.element_id, frame.start_time, frame.end_time, subs)
    if isinstance(frame, TextFrame):
        return [str(t) for t in frame.text]
    if isinstance(frame, UrlFrame):
        return frame.url
    raise AssertionError(f"unexpected frame {frame!r}")


def _expected_id3(cover: bytes) -> dict[str, Any]:
    end = SECONDS * 1000
    return {
        "TIT2": [[META["title"]]],
        "TPE1": [[META["artist"]]],
        "TALB": [[META["album"]]],
        "TRCK": [["7"]],
        "TIT3": [[META["subtitle"]]],
        "COMM": [("eng", "", [SUMMARY])],
        "TDES": [[SUMMARY]],
        "TCON": [["Podcast"]],
        "TDRC": [["2024"]],
        "TPUB": [[META["publisher"]]],
        "WXXX": [("", META["url"])],
        "TCOP": [[META["license"]]],
        "WCOP": [META["license_url"]],
        "TKWD": [[KEYWORDS]],
        "APIC": [("image/png", PictureType.COVER_FRONT, "", cover)],
        "CTOC": [("toc", CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED, ["chp0", "chp1", "chp2"], 0)],
        "CHAP": [
            ("chp0", 0, 5500, [("TIT2", ["Intro: Grüße"]), ("WXXX", ("", INTRO_URL))]),
            ("chp1", 5500, 12345, [("TIT2", ["Zweites Kapitel 🎧"])]),
            ("chp2", 12345, end, [("TIT2", ["Outro; #3 = \\ Ende"])]),
        ],
    }  # fmt: skip


EXPECTED_VORBIS = sorted(
    [
        ("TITLE", META["title"]),
        ("ARTIST", META["artist"]),
        ("ALBUM", META["album"]),
        ("TRACKNUMBER", "7"),
        ("SUBTITLE", META["subtitle"]),
        ("DESCRIPTION", SUMMARY),
        ("COMMENT", SUMMARY),
        ("GENRE", "Podcast"),
        ("DATE", "2024"),
        ("ORGANIZATION", META["publisher"]),
        ("PUBLISHER", META["publisher"]),
        ("URL", META["url"]),
        ("CONTACT", META["url"]),
        ("COPYRIGHT", META["license"]),
        ("LICENSE", META["license_url"]),
        ("KEYWORDS", KEYWORDS),
        ("CHAPTER001", "00:00:00.000"),
        ("CHAPTER001NAME", "Intro: Grüße"),
        ("CHAPTER001URL", EXPECTED_CHAPTERS[0][2]),
        ("CHAPTER002", "00:00:05.500"),
        ("CHAPTER002NAME", "Zweites Kapitel 🎧"),
        ("CHAPTER003", "00:00:12.345"),
        ("CHAPTER003NAME", "Outro; #3 = \\ Ende"),
    ]
)


def _expected_mp4(cover: bytes) -> dict[str, Any]:
    itunes = "----:com.apple.iTunes:"
    return {
        "©nam": [META["title"]],
        "©ART": [META["artist"]],
        "©alb": [META["album"]],
        "trkn": [(7, 0)],
        f"{itunes}SUBTITLE": [META["subtitle"].encode()],
        "©cmt": [SUMMARY],
        "ldes": [SUMMARY],
        "desc": [SUMMARY[:255]],
        "©gen": ["Podcast"],
        "©day": ["2024"],
        f"{itunes}PUBLISHER": [META["publisher"].encode()],
        f"{itunes}URL": [META["url"].encode()],
        "cprt": [META["license"]],
        f"{itunes}LICENSE": [META["license_url"].encode()],
        "keyw": [KEYWORDS],
        "©xyz": ["+47.070000+015.439000/"],
        "covr": [MP4Cover(cover, imageformat=MP4Cover.FORMAT_PNG)],
    }


EXPECTED_MATROSKA = {
    "title": META["title"],
    "ARTIST": META["artist"],
    "ALBUM": META["album"],
    "track": "7",
    "SUBTITLE": META["subtitle"],
    "DESCRIPTION": SUMMARY,
    "COMMENT": SUMMARY,
    "GENRE": "Podcast",
    "DATE_RELEASED": "2024",
    "PUBLISHER": META["publisher"],
    "URL": META["url"],
    "COPYRIGHT": META["license"],
    "LICENSE": META["license_url"],
    "KEYWORDS": KEYWORDS,
}


def _mp4_view(path: Path) -> dict[str, Any]:
    tags = MP4(path).tags
    assert tags is not None
    return {
        key: [bytes(v) if isinstance(v, MP4FreeForm) else v for v in values]
        for key, values in tags.items()
    }


def _vorbis_view(comments: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[bytes]]:
    """Split Vorbis comments into sorted text comments and decoded picture blocks."""
    pictures = [base64.b64decode(v) for k, v in comments if k == "METADATA_BLOCK_PICTURE"]
    return sorted((k, v) for k, v in comments if k != "METADATA_BLOCK_PICTURE"), pictures


def _assert_png_picture(picture: Picture, cover: bytes) -> None:
    fields = (picture.type, picture.mime, picture.desc, picture.width, picture.height)
    assert fields == (PictureType.COVER_FRONT, "image/png", "", 64, 64)
    assert picture.data == cover


def _chapter_view(chapters: list[Chapter]) -> list[tuple[int, str, str]]:
    return [(round(c.start * 1000), c.title, c.url) for c in chapters]


@pytest.mark.parametrize("case", list(CASES))
def test_full_metadata_round_trips_without_touching_the_audio(case, sources, cover, tmp_path):
    path = _copy(sources, case, tmp_path)
    _, fmt, _ = CASES[case]
    before = _audio_md5(path)
    streams_before = _stream_types(path)
    png = cover.read_bytes()

    write_tags(path, fmt, META, parse_chapters(CHAPTERS_TEXT), cover=cover, duration=SECONDS)

    kind = CONTAINER[case]
    if kind == "id3":
        assert _id3_view(ID3(path)) == _expected_id3(png)
    elif kind == "wav":
        tags = WAVE(path).tags
        assert tags is not None
        assert _id3_view(tags) == _expected_id3(png)
    elif kind in {"ogg", "opus"}:
        tags = (OggVorbis if kind == "ogg" else OggOpus)(path).tags
        comments, pictures = _vorbis_view(list(tags))
        assert comments == EXPECTED_VORBIS
        assert len(pictures) == 1
        _assert_png_picture(Picture(pictures[0]), png)
    elif kind == "flac":
        flac = FLAC(path)
        comments, pictures = _vorbis_view(list(flac.tags))
        assert comments == EXPECTED_VORBIS
        assert pictures == []  # FLAC keeps its cover in a PICTURE block instead
        assert len(flac.pictures) == 1
        _assert_png_picture(flac.pictures[0], png)
    elif kind == "mp4":
        assert _mp4_view(path) == _expected_mp4(png)
        # mutagen reads the Nero chapter list: starts to the 100 ns, titles, never URLs.
        chpl = [(round(c.start * 1000), c.title) for c in MP4(path).chapters]
        assert chpl == [(start, title) for start, title, _ in EXPECTED_CHAPTERS]
        # Apple's players read the QuickTime chapter track; ffmpeg shows that one.
        qt = [(start, title) for start, title, _ in _chapter_view(read_av_chapters(path))]
        assert qt == chpl
    else:
        with av.open(str(path)) as container:
            metadata = {k: v for k, v in container.metadata.items() if k != "ENCODER"}
        assert metadata == EXPECTED_MATROSKA

    expected_meta = {k: v for k, v in META.items() if k != "append_chapters"}
    expected_meta["summary"] = SUMMARY
    expected_meta["location"] = {"latitude": 47.07, "longitude": 15.439}
    if kind != "mp4":
        del expected_meta["location"]  # only MP4 has a place for it (©xyz)
    assert read_tags(path, fmt) == expected_meta

    webm = case == "video-webm"  # WebM keeps no chapter tags (URLs) and no attachments (cover)
    expected_chapters = EXPECTED_CHAPTERS
    if kind == "mp4" or webm:
        expected_chapters = [(start, title, "") for start, title, _ in EXPECTED_CHAPTERS]
    assert _chapter_view(read_chapters(path, fmt)) == expected_chapters

    assert read_cover(path, fmt) == (None if webm else png)

    assert _audio_md5(path) == before
    # Nothing but the cover (and MP4's chapter track, which ffmpeg adds) joins the streams.
    added = [] if webm else ["cover"]
    if kind == "mp4":
        added.append("data")
    assert sorted(_stream_types(path)) == sorted([*streams_before, *added])


@pytest.mark.parametrize("case", ["mp3", "wav", "opus", "flac", "aac", "video-mp4", "video-mkv"])
def test_writing_again_replaces_everything(case, sources, cover, tmp_path):
    path = _copy(sources, case, tmp_path)
    _, fmt, _ = CASES[case]
    before = _audio_md5(path)
    streams_before = _stream_types(path)
    write_tags(path, fmt, META, parse_chapters(CHAPTERS_TEXT), cover=cover, duration=SECONDS)

    write_tags(path, fmt, {"title": "Zweiter Titel"}, [Chapter(start=3.25, title="Nur eins")])

    assert read_tags(path, fmt) == {"title": "Zweiter Titel"}
    assert read_cover(path, fmt) is None
    url = ""
    assert _chapter_view(read_chapters(path, fmt)) == [(3250, "Nur eins", url)]
    assert _audio_md5(path) == before
    if CONTAINER[case] == "mp4":
        assert _stream_types(path) == [*streams_before, "data"]  # one chapter track, not two
    else:
        assert _stream_types(path) == streams_before

    write_tags(path, fmt, {}, None)

    assert read_tags(path, fmt) == {}
    assert read_chapters(path, fmt) == []
    assert _stream_types(path) == streams_before
    assert _audio_md5(path) == before


def test_mov_takes_the_mp4_path_and_avi_gets_generic_tags(sources, cover, tmp_path):
    mov = tmp_path / "clip.mov"
    _run("-i", str(sources["video-mp4"]), "-c", "copy", str(mov))
    avi = tmp_path / "clip.avi"
    _run("-i", str(sources["video-mp4"]), "-c:v", "mpeg4", "-c:a", "libmp3lame", str(avi))
    chapters = parse_chapters(CHAPTERS_TEXT)
    before = {path: _audio_md5(path) for path in (mov, avi)}

    for path in (mov, avi):
        write_tags(path, "video", META, chapters, cover=cover, duration=SECONDS)

    assert _mp4_view(mov) == _expected_mp4(cover.read_bytes())
    assert _chapter_view(read_chapters(mov, "video")) == [
        (start, title, "") for start, title, _ in EXPECTED_CHAPTERS
    ]
    # AVI's INFO chunk has no place for the rest, nor for chapters or a cover.
    generic = {"title", "artist", "album", "track", "summary", "genre", "year", "license"}
    expected = {key: value for key, value in META.items() if key in generic}
    assert read_tags(avi, "video") == {**expected, "summary": SUMMARY}
    assert read_chapters(avi, "video") == []
    assert read_cover(avi, "video") is None
    assert {path: _audio_md5(path) for path in (mov, avi)} == before


def test_mp3_tags_are_id3v24_utf8_without_id3v1(sources, tmp_path):
    path = _copy(sources, "mp3", tmp_path)
    write_tags(path, "mp3", META, parse_chapters(CHAPTERS_TEXT))
    tags = ID3(path)
    assert tags.version == (2, 4, 0)
    assert {frame.encoding for frame in tags.values() if hasattr(frame, "encoding")} == {3}
    assert path.read_bytes()[-128:-125] != b"TAG"
    # Without a duration the last chapter ends where the file does.
    assert tags["CHAP:chp2"].end_time == pytest.approx(SECONDS * 1000, abs=60)


def test_mp4_chapter_titles_are_cut_at_a_character_boundary(sources, tmp_path):
    path = _copy(sources, "aac", tmp_path)
    title = "😀" * 70  # 280 UTF-8 bytes; the chpl list holds 255
    write_tags(path, "aac", {}, [Chapter(0, title), Chapter(5, "b")], duration=SECONDS)
    assert [c.title for c in MP4(path).chapters] == ["😀" * 63, "b"]


def test_a_bad_cover_or_late_chapter_leaves_the_file_alone(sources, tmp_path):
    path = _copy(sources, "flac", tmp_path)
    original = path.read_bytes()
    not_an_image = tmp_path / "cover.png"
    not_an_image.write_text("hello")
    with pytest.raises(ValueError, match="must be a PNG or JPEG"):
        write_tags(path, "flac", {"title": "x"}, None, cover=not_an_image)
    with pytest.raises(ValueError, match=r"starts at 00:00:25\.000, at or after the end"):
        write_tags(path, "flac", {"title": "x"}, [Chapter(0, "a"), Chapter(25, "late")])
    with pytest.raises(ParamsError, match=r"metadata\.colour"):
        write_tags(path, "flac", {"colour": "red"}, None)
    assert path.read_bytes() == original


def test_a_jpeg_cover_is_embedded_with_its_type(sources, tmp_path):
    jpeg = tmp_path / "cover.jpg"
    _run("-f", "lavfi", "-i", "color=c=blue:s=48x32", "-frames:v", "1", str(jpeg))
    path = _copy(sources, "flac", tmp_path)
    write_tags(path, "flac", {}, None, cover=jpeg)
    picture = FLAC(path).pictures[0]
    assert (picture.mime, picture.width, picture.height) == ("image/jpeg", 48, 32)
    m4a = _copy(sources, "aac", tmp_path)
    write_tags(m4a, "aac", {"cover_image": str(jpeg)}, None)
    covers = MP4(m4a).tags["covr"]
    assert covers == [MP4Cover(jpeg.read_bytes(), imageformat=MP4Cover.FORMAT_JPEG)]


# chapter parsing


def test_parse_text_chapters():
    text = (
        "# Auphonic's example, with a comment and blank lines\n"
        "00:00:00.000 Intro1 <http://url1.com>\n\n"
        "00:00:10.000 Baby prepares to rock\n"
        "00:30 Baby rocks the house\n"
        "00:01:00.5 One Minute\n"
        "1:01:30.25 End <http://url2.at/ha>\n"
    )
    assert parse_chapters(text) == [
        Chapter(0.0, "Intro1", "http://url1.com"),
        Chapter(10.0, "Baby prepares to rock"),
        Chapter(30.0, "Baby rocks the house"),
        Chapter(60.5, "One Minute"),
        Chapter(3690.25, "End", "http://url2.at/ha"),
    ]


AUPHONIC_JSON = [
    {"start": "00:00:00", "title": "Start Chapter", "url": "http://auphonic.com"},
    {"start": "00:02:18", "title": "Second Chapter"},
    {"start": 281.5, "title": "Chapter with Image", "image": "https://auphonic.com/logo.png"},
]
AUPHONIC_CHAPTERS = [
    Chapter(0.0, "Start Chapter", "http://auphonic.com"),
    Chapter(138.0, "Second Chapter"),
    Chapter(281.5, "Chapter with Image", image="https://auphonic.com/logo.png"),
]


def test_parse_json_list_and_json_string():
    assert parse_chapters(AUPHONIC_JSON) == AUPHONIC_CHAPTERS
    import json

    assert parse_chapters(json.dumps(AUPHONIC_JSON)) == AUPHONIC_CHAPTERS
    assert parse_chapters([{"start": "12.5", "title": "x"}]) == [Chapter(12.5, "x")]
    assert parse_chapters("") == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("00:00:00 Intro\n\n00:61:00 Bad", "line 3: '00:61:00' is not a valid time"),
        ("00:00:60 Bad", "line 1: '00:00:60' is not a valid time"),
        ("Intro 00:00:00", "line 1: 'Intro' is not a valid time"),
        ("00:00:10 A\n00:00:05 B", "line 2: starts at 00:00:05.000, not after the previous"),
        ("00:00:10 A\n00:00:10.000 B", "line 2: starts at 00:00:10.000, not after the previous"),
        ("00:00:00 A\n00:00:10   ", "line 2: the title is empty"),
        ("00:00:00 A <ftp://x.org>", r"line 1: 'ftp://x.org' is not an http\(s\) URL"),
        ([{"start": "00:00:00", "title": " "}], r"chapters\[0\]: the title is empty"),
        ([{"start": "0:00", "title": "a"}, {"start": -1, "title": "b"}], r"chapters\[1\]: start"),
        ([{"start": "00:00:01"}], r"chapters\[0\]: title is required"),
        ([{"start": 0, "title": "a", "colour": "red"}], r"chapters\[0\]: unknown key\(s\) colour"),
        ([{"start": 5, "title": "a"}, {"start": "00:00:05", "title": "b"}], "not after"),
        ("[{oops", "chapters: invalid JSON"),
        ({"start": 0}, "expected text or a list"),
    ],
)
def test_parse_errors_name_the_line_or_index(value, message):
    with pytest.raises(ValueError, match=message):
        parse_chapters(value)


def test_parse_reports_every_bad_line():
    with pytest.raises(ValueError) as caught:
        parse_chapters("00:00:99 A\n00:00:01 B\nxx C")
    assert str(caught.value) == (
        "line 1: '00:00:99' is not a valid time; line 3: 'xx' is not a valid time"
    )


def test_fill_ends_and_chapters_after_the_end():
    chapters = parse_chapters("00:00 A\n00:05 B\n00:12.345 C")
    assert fill_ends(chapters, 20.0) is chapters
    assert [(c.start, c.end) for c in chapters] == [(0, 5), (5, 12.345), (12.345, 20.0)]
    with pytest.raises(ValueError, match=r"chapter 3 \('C'\) starts at 00:00:12\.345, at or after"):
        fill_ends(parse_chapters("00:00 A\n00:05 B\n00:12.345 C"), 12.345)
    with pytest.raises(ValueError, match="duration must be a positive"):
        fill_ends([], 0)


def test_chapters_text_round_trips_and_is_what_append_chapters_appends(sources, tmp_path):
    chapters = parse_chapters(CHAPTERS_TEXT)
    text = chapters_text(chapters)
    assert text == SUMMARY.split("\n\n", 1)[1]
    assert parse_chapters(text) == chapters

    path = _copy(sources, "opus", tmp_path)
    write_tags(path, "opus", {"append_chapters": True}, chapters, duration=SECONDS)
    assert read_tags(path, "opus") == {"summary": text}
    write_tags(path, "opus", {"summary": "S", "append_chapters": False}, chapters)
    assert read_tags(path, "opus") == {"summary": "S"}


# metadata validation


def test_validate_metadata_coerces_form_values():
    assert validate_metadata(
        {
            "title": " Title ",
            "track": "3",
            "year": "2012",
            "tags": "podcast, auphonic api, metadata,, ",
            "append_chapters": "true",
            "summary": "a\r\nb",
            "genre": "",
            "cover_image": "/srv/covers/1.png",
        }
    ) == {
        "title": "Title",
        "track": 3,
        "summary": "a\nb",
        "year": 2012,
        "tags": ["podcast", "auphonic api", "metadata"],
        "append_chapters": True,
        "cover_image": "/srv/covers/1.png",
    }
    # Validated metadata validates to itself.
    full = validate_metadata(META)
    assert validate_metadata(full) == full


def test_validate_metadata_lists_every_problem():
    with pytest.raises(ParamsError) as caught:
        validate_metadata(
            {
                "title": ["x"],
                "track": "two",
                "year": 20245,
                "url": "javascript:alert(1)",
                "license_url": "ftp://x.org/l",
                "tags": ["a,b"],
                "append_chapters": "maybe",
                "cover_image": 5,
                "subtitle": "two\nlines",
                "colour": "red",
                "size": 3,
            }
        )
    errors = caught.value.errors
    assert set(errors) == {
        "metadata.title",
        "metadata.track",
        "metadata.year",
        "metadata.url",
        "metadata.license_url",
        "metadata.tags",
        "metadata.append_chapters",
        "metadata.cover_image",
        "metadata.subtitle",
        "metadata.colour",
        "metadata.size",
    }
    assert errors["metadata.colour"].startswith("unknown key")
    assert "whole number from 1000 to 9999" in errors["metadata.year"]
    with pytest.raises(ParamsError, match="metadata: must be an object"):
        validate_metadata(["title"])  # type: ignore[arg-type]


def test_chapter_dataclass_defaults():
    chapter = Chapter(1.0, "a")
    assert dataclasses.astuple(chapter) == (1.0, "a", "", "", None)
