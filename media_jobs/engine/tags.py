"""Write Auphonic-style metadata, cover art and chapter marks into encoded outputs.

Audio is never re-encoded. mutagen edits tags in place (it moves the audio in chunks when a
tag grows); where mutagen cannot write (MP4 chapters, Matroska), ffmpeg remuxes with
``-c copy`` into a temporary file next to the output that then atomically replaces it.

=============  ==================  ===================================  ========================
field          ID3v2.4 (mp3, wav)  MP4 (aac, alac, mp4/mov video)       Vorbis (vorbis, opus,
                                                                        flac)
=============  ==================  ===================================  ========================
title          TIT2                ©nam                                 TITLE
artist         TPE1                ©ART                                 ARTIST
album          TALB                ©alb                                 ALBUM
track          TRCK                trkn (track, 0)                      TRACKNUMBER
subtitle       TIT3                ----:com.apple.iTunes:SUBTITLE       SUBTITLE
summary        COMM (eng) + TDES   ©cmt + ldes + desc (first 255 chars) DESCRIPTION + COMMENT
genre          TCON                ©gen                                 GENRE
year           TDRC                ©day                                 DATE
publisher      TPUB                ----:com.apple.iTunes:PUBLISHER      ORGANIZATION + PUBLISHER
url            WXXX (no desc.)     ----:com.apple.iTunes:URL            URL + CONTACT
license        TCOP                cprt                                 COPYRIGHT
license_url    WCOP                ----:com.apple.iTunes:LICENSE        LICENSE
tags           TKWD ("a, b")       keyw ("a, b")                        KEYWORDS ("a, b")
location       -                   ©xyz (ISO 6709)                      -
cover          APIC (front cover)  covr                                 METADATA_BLOCK_PICTURE;
                                                                        FLAC: PICTURE block
chapters       CTOC + CHAP with    chpl (Nero) + QuickTime chapter      CHAPTERnnn, CHAPTERnnn
               TIT2, WXXX url      track, written by ffmpeg; no URLs    NAME, CHAPTERnnnURL
=============  ==================  ===================================  ========================

Matroska video (mkv) gets TITLE, ARTIST, ALBUM, PART_NUMBER, SUBTITLE, DESCRIPTION + COMMENT,
GENRE, DATE_RELEASED, PUBLISHER, URL, COPYRIGHT, LICENSE and KEYWORDS tags, chapters with a
URL chapter tag, and the cover as an attachment. WebM gets the same tags and chapters, but
its muxer keeps neither chapter URLs nor attachments (so no cover). Other video containers
get ffmpeg's generic tags (title, artist, album, track, comment, genre, date, publisher,
copyright) and chapters as far as their muxer keeps them (AVI: no chapters, no publisher).

Not written anywhere: chapter images (Chapter.image is parsed and kept; embedding a picture
per chapter is left to a caller that fetched it). In MP4, chapter URLs have no place, and
ffmpeg's QuickTime chapter track, which Apple's players read, starts the first chapter at
0:00 even when the chpl list says later.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    APIC,
    CHAP,
    COMM,
    CTOC,
    ID3,
    TALB,
    TCON,
    TCOP,
    TDES,
    TDRC,
    TIT2,
    TIT3,
    TKWD,
    TPE1,
    TPUB,
    TRCK,
    WCOP,
    WXXX,
    CTOCFlags,
    Frame,
    ID3NoHeaderError,
    PictureType,
)
from mutagen.mp4 import MP4, AtomDataType, MP4Cover, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from .chapters import Chapter, chapters_text, fill_ends, format_time, parse_time
from .errors import EngineError, ParamsError
from .ffmpeg import file_url, run_ffmpeg

TEXT_FIELDS = ("title", "artist", "album", "subtitle", "genre", "publisher", "license")
URL_FIELDS = ("url", "license_url")
FIELDS = (
    "title", "artist", "album", "track", "subtitle", "summary", "genre", "year", "publisher",
    "url", "license", "license_url", "tags", "append_chapters", "cover_image", "location",
)  # fmt: skip
MAX_TEXT_LENGTH = 2_000
MAX_SUMMARY_LENGTH = 100_000
# A FLAC metadata block holds at most 16 MiB, the picture's own fields included.
MAX_COVER_BYTES = 10 * 1024 * 1024
# Apple's players show desc (the short description) cut at 255 characters; ldes has it all.
MP4_DESC_LENGTH = 255
# ffmpeg cuts chpl titles at 255 bytes, mid-character if need be, which mutagen then cannot
# decode: cut them at a character boundary first.
MP4_CHAPTER_TITLE_BYTES = 255
TAG_SEPARATOR = ", "

_ITUNES = "----:com.apple.iTunes:"
_ID3_ELEMENT_TOC = "toc"
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SUMMARY_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tabs and newlines are fine
_ISO6709_RE = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)/$")
_VORBIS_CHAPTER_RE = re.compile(r"^CHAPTER(\d+)(NAME|URL)?$")
_AV_CHAPTER_TRACK = "bin_data"  # how ffmpeg's mov demuxer shows a QuickTime chapter track

_CONTAINERS = {
    "mp3": "id3",
    "mp3-vbr": "id3",
    "wav": "wav",
    "wav-24bit": "wav",
    "vorbis": "ogg",
    "opus": "opus",
    "flac": "flac",
    "aac": "mp4",
    "alac": "mp4",
}
# Muxer to remux an MP4-family file with, by suffix: ipod keeps .m4a players happy.
_MP4_MUXERS = {".m4a": "ipod", ".m4b": "ipod", ".mov": "mov", ".qt": "mov"}

# Our field -> Vorbis comment names; the first name is the one read back.
_VORBIS_KEYS: dict[str, tuple[str, ...]] = {
    "title": ("TITLE",),
    "artist": ("ARTIST",),
    "album": ("ALBUM",),
    "track": ("TRACKNUMBER",),
    "subtitle": ("SUBTITLE",),
    "summary": ("DESCRIPTION", "COMMENT"),
    "genre": ("GENRE",),
    "year": ("DATE",),
    "publisher": ("ORGANIZATION", "PUBLISHER"),
    "url": ("URL", "CONTACT"),
    "license": ("COPYRIGHT",),
    "license_url": ("LICENSE",),
    "tags": ("KEYWORDS",),
}
_MATROSKA_KEYS: dict[str, tuple[str, ...]] = {
    **_VORBIS_KEYS,
    "track": ("PART_NUMBER",),
    "year": ("DATE_RELEASED",),
    "publisher": ("PUBLISHER",),
    "url": ("URL",),
}
_GENERIC_KEYS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "artist": ("artist",),
    "album": ("album",),
    "track": ("track",),
    "summary": ("comment",),
    "genre": ("genre",),
    "year": ("date",),
    "publisher": ("publisher",),
    "license": ("copyright",),
}
_MP4_TEXT = {
    "title": "©nam",
    "artist": "©ART",
    "album": "©alb",
    "genre": "©gen",
    "license": "cprt",
}
_MP4_FREEFORM = {
    "subtitle": f"{_ITUNES}SUBTITLE",
    "publisher": f"{_ITUNES}PUBLISHER",
    "url": f"{_ITUNES}URL",
    "license_url": f"{_ITUNES}LICENSE",
}


@dataclasses.dataclass(frozen=True)
class Cover:
    """A cover image checked to be PNG or JPEG, with what tag formats record about it."""

    path: Path
    data: bytes
    mime: str
    width: int
    height: int
    depth: int  # bits per pixel

    @property
    def extension(self) -> str:
        """Return the file extension for the image type."""
        return "png" if self.mime == "image/png" else "jpg"


# metadata


def validate_metadata(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Return Auphonic metadata normalised (unset fields dropped) or raise ParamsError."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ParamsError({"metadata": "must be an object"})
    errors: dict[str, str] = {}
    for key in sorted(str(k) for k in set(meta) - set(FIELDS)):
        errors[f"metadata.{key}"] = f"unknown key (choose from {', '.join(FIELDS)})"
    result: dict[str, Any] = {}
    for key in FIELDS:
        value = meta.get(key)
        if value is None or value == "" or value == []:
            continue
        where = f"metadata.{key}"
        try:
            result[key] = _FIELD_CHECKS.get(key, _single_line)(value)
        except ValueError as exc:
            errors[where] = str(exc)
    if errors:
        raise ParamsError(errors)
    # Empty tags after splitting ("  , ") mean no tags.
    if result.get("tags") == []:
        del result["tags"]
    return result


def _text(value: Any, limit: int) -> str:
    """Return a stripped string; numbers become their decimal text."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > limit:
        raise ValueError(f"must be at most {limit} characters, got {len(text)}")
    return text


def _single_line(value: Any) -> str:
    """Return a one-line text field."""
    text = _text(value, MAX_TEXT_LENGTH)
    if _CONTROL_RE.search(text):
        raise ValueError("must be one line without control characters")
    return text


def _summary(value: Any) -> str:
    """Return the summary: several lines allowed, other control characters not."""
    text = _text(value, MAX_SUMMARY_LENGTH).replace("\r\n", "\n").replace("\r", "\n")
    if _SUMMARY_CONTROL_RE.search(text):
        raise ValueError("must not contain control characters other than newlines and tabs")
    return text


def _url(value: Any) -> str:
    """Return an http(s) URL."""
    text = _single_line(value)
    parts = urlsplit(text)
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc or " " in text:
        raise ValueError(f"must be an http(s) URL, got {text!r}")
    return text


def _whole(value: Any, low: int, high: int) -> int:
    """Return an int in [low, high] from an int, an integral float or a numeric string."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {value!r}")
    number: float
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        number = int(value)
    else:
        raise ValueError(f"must be a whole number, got {value!r}")
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise ValueError(f"must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def _tags(value: Any) -> list[str]:
    """Return keywords from a list of strings or a comma-separated string."""
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"must be a list of strings or a comma-separated string, got {value!r}")
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"must contain only strings, got {item!r}")
        tag = _single_line(item)
        # Every container stores keywords as one comma-separated string.
        if "," in tag:
            raise ValueError(f"a tag cannot contain a comma: {tag!r}")
        if tag and tag not in result:
            result.append(tag)
    return result


def _flag(value: Any) -> bool:
    """Return a boolean from JSON or form input ("true"/"false"/"1"/"0")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0"}:
        return value.strip().lower() in {"true", "1"}
    raise ValueError(f"must be true or false, got {value!r}")


def _path(value: Any) -> str:
    """Return a file path string (set by the service layer, never by users)."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"must be a file path string, got {type(value).__name__}")
    return value


def _location(value: Any) -> dict[str, float]:
    """Return {"latitude", "longitude"} as floats rounded to six places (about 0.1 m)."""
    if not isinstance(value, dict):
        raise ValueError("must be an object with latitude and longitude")
    unknown = sorted(str(k) for k in set(value) - {"latitude", "longitude"})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}")
    result = {}
    for key, limit in (("latitude", 90), ("longitude", 180)):
        raw = value.get(key)
        try:
            if isinstance(raw, bool):
                raise ValueError
            number = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {raw!r}") from None
        if not math.isfinite(number) or abs(number) > limit:
            raise ValueError(f"{key} must be between -{limit} and {limit}, got {raw!r}")
        result[key] = round(number, 6)
    return result


_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "summary": _summary,
    "url": _url,
    "license_url": _url,
    "track": lambda value: _whole(value, 1, 65535),  # MP4 stores the track in 16 bits
    "year": lambda value: _whole(value, 1000, 9999),
    "tags": _tags,
    "append_chapters": _flag,
    "cover_image": _path,
    "location": _location,
}


# writing


def write_tags(
    path: Path,
    fmt: str,
    metadata: dict[str, Any],
    chapters: list[Chapter] | None,
    cover: Path | None = None,
    duration: float | None = None,
) -> None:
    """Replace the tags, cover and chapters of an encoded output, leaving its audio untouched.

    fmt is the output format name (FORMATS); cover defaults to metadata["cover_image"];
    duration (seconds, for the last chapter's end) is read from the file when not given.
    """
    path = Path(path)
    meta = validate_metadata(metadata)
    container = container_kind(path, fmt)
    marks = [dataclasses.replace(chapter) for chapter in chapters or []]
    if marks:
        fill_ends(marks, duration if duration is not None else media_duration(path))
    if meta.get("append_chapters") and marks:
        listing = chapters_text(marks)
        summary = meta.get("summary")
        meta["summary"] = f"{summary}\n\n{listing}" if summary else listing
    picture_path = cover or meta.get("cover_image")
    picture = load_cover(Path(picture_path)) if picture_path else None
    _WRITERS[container](path, meta, marks, picture)


def container_kind(path: Path, fmt: str) -> str:
    """Return how a format's file is tagged: id3, wav, ogg, opus, flac, mp4, mkv, webm, other."""
    if fmt in _CONTAINERS:
        return _CONTAINERS[fmt]
    if fmt != "video":
        raise ValueError(f"cannot tag format {fmt!r}")
    try:
        with av.open(os.fspath(path)) as container:
            names = set(container.format.name.split(","))
    except (av.FFmpegError, OSError) as exc:
        raise EngineError(f"Could not read {path.name} to tag it.") from exc
    if names & {"mov", "mp4"}:
        return "mp4"
    if "matroska" in names:
        return "webm" if path.suffix.lower() == ".webm" else "mkv"
    return "other"


def media_duration(path: Path) -> float:
    """Return a media file's duration in seconds, as ffmpeg's demuxer reports it."""
    try:
        with av.open(os.fspath(path)) as container:
            if container.duration:
                return container.duration / av.time_base
            durations = [
                float(s.duration * s.time_base)
                for s in container.streams
                if s.duration and s.time_base
            ]
    except (av.FFmpegError, OSError) as exc:
        raise EngineError(f"Could not read the duration of {path.name}.") from exc
    if not durations:
        raise EngineError(f"The duration of {path.name} is unknown.")
    return max(durations)


def load_cover(path: Path) -> Cover:
    """Return a PNG or JPEG cover with its size; raise ValueError for anything else."""
    try:
        size = path.stat().st_size
        if size > MAX_COVER_BYTES:
            raise ValueError(f"cover image is larger than {MAX_COVER_BYTES // 1024 // 1024} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cover image {path.name} cannot be read") from exc
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height, bits, colour = struct.unpack(">IIBB", data[16:26])
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
        return Cover(path, data, "image/png", width, height, bits * channels)
    if data.startswith(b"\xff\xd8\xff"):
        frame = _jpeg_frame(data)
        if frame:
            return Cover(path, data, "image/jpeg", *frame)
    raise ValueError(f"cover image {path.name} must be a PNG or JPEG file")


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """Return (width, height, bits per pixel) from a JPEG's start-of-frame segment."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in {0x01, *range(0xD0, 0xD8)}:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in {0xC4, 0xC8, 0xCC}:
            if pos + 10 > len(data):
                return None
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return width, height, precision * components
        pos += 2 + length
    return None


def _joined_tags(meta: dict[str, Any]) -> str:
    """Return the keywords as the one comma-separated string every container stores."""
    return TAG_SEPARATOR.join(meta.get("tags", []))


def _text_values(meta: dict[str, Any]) -> dict[str, str]:
    """Return every set field as the text the tag formats store."""
    values = {}
    for key in (*TEXT_FIELDS, *URL_FIELDS, "summary", "track", "year"):
        if key in meta:
            values[key] = str(meta[key])
    if meta.get("tags"):
        values["tags"] = _joined_tags(meta)
    return values


# ID3 (mp3, wav)


def _id3_frames(meta: dict[str, Any], chapters: list[Chapter], cover: Cover | None) -> list[Frame]:
    """Return the ID3v2.4 frames for metadata, cover and chapters (UTF-8 text)."""
    text_frames = {
        "title": TIT2,
        "artist": TPE1,
        "album": TALB,
        "track": TRCK,
        "subtitle": TIT3,
        "genre": TCON,
        "year": TDRC,
        "publisher": TPUB,
        "license": TCOP,
        "tags": TKWD,
    }
    values = _text_values(meta)
    frames: list[Frame] = [
        kind(encoding=3, text=[values[key]]) for key, kind in text_frames.items() if key in values
    ]
    if "summary" in values:
        # COMM is what players show; TDES is Apple Podcasts' episode description.
        frames.append(COMM(encoding=3, lang="eng", desc="", text=[values["summary"]]))
        frames.append(TDES(encoding=3, text=[values["summary"]]))
    if "url" in values:
        frames.append(WXXX(encoding=3, desc="", url=values["url"]))
    if "license_url" in values:
        frames.append(WCOP(url=values["license_url"]))
    if cover is not None:
        frames.append(
            APIC(
                encoding=3,
                mime=cover.mime,
                type=PictureType.COVER_FRONT,
                desc="",
                data=cover.data,
            )
        )
    if chapters:
        ids = [f"chp{index}" for index in range(len(chapters))]
        frames.append(
            CTOC(
                element_id=_ID3_ELEMENT_TOC,
                flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
                child_element_ids=ids,
                sub_frames=[],
            )
        )
        for element_id, chapter in zip(ids, chapters, strict=True):
            assert chapter.end is not None
            sub_frames: list[Frame] = [TIT2(encoding=3, text=[chapter.title])]
            if chapter.url:
                sub_frames.append(WXXX(encoding=3, desc="", url=chapter.url))
            frames.append(
                CHAP(
                    element_id=element_id,
                    start_time=_millis(chapter.start),
                    end_time=_millis(chapter.end),
                    # No byte offsets: players seek by time (0xFFFFFFFF: "not set").
                    start_offset=0xFFFFFFFF,
                    end_offset=0xFFFFFFFF,
                    sub_frames=sub_frames,
                )
            )
    return frames


def _millis(seconds: float) -> int:
    """Return seconds as whole milliseconds."""
    return round(seconds * 1000)


def _write_mp3(
    path: Path, meta: dict[str, Any], chapters: list[Chapter], cover: Cover | None
) -> None:
    """Replace the ID3v2 tag of an MP3 (and drop any ID3v1 tag, which cannot hold UTF-8)."""
    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        tags = ID3()
    tags.clear()
    tags.unknown_frames = []
    for frame in _id3_frames(meta, chapters, cover):
        tags.add(frame)
    tags.save(path, v2_version=4, v1=0)


def _write_wav(
    path: Path, meta: dict[str, Any], chapters: list[Chapter], cover: Cover | None
) -> None:
    """Replace the ID3 chunk of a RIFF WAVE file."""
    with path.open("rb") as handle:
        if handle.read(4) != b"RIFF":
            # RF64 (over 4 GiB) has 64-bit sizes in a ds64 chunk mutagen cannot update.
            raise EngineError(f"{path.name} is not a RIFF WAVE file (RF64?); it cannot be tagged.")
    wave = WAVE(path)
    if wave.tags is None:
        wave.add_tags()
    assert wave.tags is not None
    wave.tags.clear()
    for frame in _id3_frames(meta, chapters, cover):
        wave.tags.add(frame)
    wave.save(v2_version=4)


# Vorbis comments (ogg, opus, flac)


def _vorbis_comments(meta: dict[str, Any], chapters: list[Chapter]) -> list[tuple[str, str]]:
    """Return the Vorbis comments for metadata and chapters, in a stable order."""
    values = _text_values(meta)
    comments = [
        (name, values[key])
        for key, names in _VORBIS_KEYS.items()
        if key in values
        for name in names
    ]
    for number, chapter in enumerate(chapters, start=1):
        prefix = f"CHAPTER{number:03d}"
        comments.append((prefix, format_time(chapter.start)))
        comments.append((f"{prefix}NAME", chapter.title))
        if chapter.url:
            comments.append((f"{prefix}URL", chapter.url))
    return comments


def _flac_picture(cover: Cover) -> Picture:
    """Return a FLAC picture block (also the payload of METADATA_BLOCK_PICTURE)."""
    picture = Picture()
    picture.type = PictureType.COVER_FRONT
    picture.mime = cover.mime
    picture.desc = ""
    picture.width = cover.width
    picture.height = cover.height
    picture.depth = cover.depth
    picture.data = cover.data
    return picture


def _write_vorbis(
    path: Path, meta: dict[str, Any], chapters: list[Chapter], cover: Cover | None, opener: Any
) -> None:
    """Replace the Vorbis comments (and pictures) of an Ogg Vorbis, Opus or FLAC file."""
    audio = opener(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags.clear()
    for key, value in _vorbis_comments(meta, chapters):
        audio.tags.append((key, value))
    if isinstance(audio, FLAC):
        audio.clear_pictures()
        if cover is not None:
            audio.add_picture(_flac_picture(cover))
    elif cover is not None:
        encoded = base64.b64encode(_flac_picture(cover).write()).decode("ascii")
        audio.tags.append(("METADATA_BLOCK_PICTURE", encoded))
    audio.save()


# MP4 (aac, alac, mp4/mov video)


def _write_mp4(
    path: Path, meta: dict[str, Any], chapters: list[Chapter], cover: Cover | None
) -> None:
    """Write chapters with an ffmpeg remux (mutagen cannot), then the iTunes atoms."""
    if chapters or _has_mp4_chapters(path):
        # Titles only: neither chpl nor ffmpeg's chapter track can carry URLs.
        marks = [
            dataclasses.replace(c, title=_cut_utf8(c.title, MP4_CHAPTER_TITLE_BYTES), url="")
            for c in chapters
        ]
        muxer = _MP4_MUXERS.get(path.suffix.lower(), "mp4")
        _remux(path, muxer, {}, marks, None, ["-movflags", "+faststart"])
    mp4 = MP4(path)
    if mp4.tags is None:
        mp4.add_tags()
    tags = mp4.tags
    assert tags is not None
    tags.clear()
    values = _text_values(meta)
    for key, atom in _MP4_TEXT.items():
        if key in values:
            tags[atom] = [values[key]]
    for key, atom in _MP4_FREEFORM.items():
        if key in values:
            tags[atom] = [MP4FreeForm(values[key].encode("utf-8"), AtomDataType.UTF8)]
    if "track" in meta:
        tags["trkn"] = [(meta["track"], 0)]
    if "year" in values:
        tags["©day"] = [values["year"]]
    if "summary" in values:
        tags["©cmt"] = [values["summary"]]
        tags["ldes"] = [values["summary"]]
        tags["desc"] = [values["summary"][:MP4_DESC_LENGTH]]
    if "tags" in values:
        tags["keyw"] = [values["tags"]]
    if "location" in meta:
        tags["©xyz"] = [_iso6709(meta["location"])]
    if cover is not None:
        kind = MP4Cover.FORMAT_PNG if cover.mime == "image/png" else MP4Cover.FORMAT_JPEG
        tags["covr"] = [MP4Cover(cover.data, imageformat=kind)]
    mp4.save()


def _has_mp4_chapters(path: Path) -> bool:
    """Return True if an MP4 has a Nero chapter list or a QuickTime chapter track."""
    if MP4(path).chapters:
        return True
    with av.open(os.fspath(path)) as container:
        return any(_is_chapter_track(stream) for stream in container.streams)


def _cut_utf8(text: str, limit: int) -> str:
    """Return text cut to at most limit UTF-8 bytes without splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _iso6709(location: dict[str, float]) -> str:
    """Return a location as ISO 6709 (what QuickTime's ©xyz holds)."""
    return f"{location['latitude']:+010.6f}{location['longitude']:+011.6f}/"


# ffmpeg remux (mp4 chapters, Matroska, other video)


def _is_chapter_track(stream: Any) -> bool:
    """Return True for a QuickTime chapter track, which ffmpeg rebuilds from the chapters."""
    return stream.type == "data" and stream.name == _AV_CHAPTER_TRACK


def _is_cover_stream(stream: Any) -> bool:
    """Return True for an embedded picture (an MP4 covr, a Matroska image attachment)."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _ffmetadata(tags: dict[str, str], chapters: list[Chapter], *, urls: bool) -> str:
    """Return an FFMETADATA1 document with global tags and [CHAPTER] sections."""
    lines = [";FFMETADATA1"]
    lines += [f"{key}={_escape(value)}" for key, value in tags.items()]
    for chapter in chapters:
        assert chapter.end is not None
        lines += [
            "",
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={_millis(chapter.start)}",
            f"END={_millis(chapter.end)}",
            f"title={_escape(chapter.title)}",
        ]
        if urls and chapter.url:
            lines.append(f"URL={_escape(chapter.url)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    """Escape what FFMETADATA gives a meaning to: = ; # \\ and newlines."""
    return re.sub(r"([=;#\\\n])", r"\\\1", value)


def _remux(
    path: Path,
    muxer: str | None,
    tags: dict[str, str],
    chapters: list[Chapter],
    cover: Cover | None,
    extra: list[str],
    *,
    urls: bool = False,
) -> None:
    """Copy path's streams with new global tags, chapters and attachment, then replace it."""
    with av.open(os.fspath(path)) as container:
        # Old chapter tracks and covers are rebuilt, not copied (a copied chapter track fails).
        kept = [s for s in container.streams if not (_is_chapter_track(s) or _is_cover_stream(s))]
        keep = [stream.index for stream in kept]
        attachments = sum(1 for stream in kept if stream.type == "attachment")
    metadata_file = path.with_name(f".{path.name}.ffmetadata")
    temp = path.with_name(f".{path.name}.tagging{path.suffix}")
    try:
        metadata_file.write_text(_ffmetadata(tags, chapters, urls=urls), encoding="utf-8")
        args = ["-y", "-i", file_url(path), "-f", "ffmetadata", "-i", file_url(metadata_file)]
        if cover is not None:
            args += ["-attach", file_url(cover.path)]
        for index in keep:
            args += ["-map", f"0:{index}"]
        args += ["-map_metadata", "1", "-map_chapters", "1", "-c", "copy"]
        if cover is not None:
            spec = f"-metadata:s:t:{attachments}"
            args += [spec, f"mimetype={cover.mime}", spec, f"filename=cover.{cover.extension}"]
        args += extra
        if muxer:
            args += ["-f", muxer]
        args.append(file_url(temp))
        run_ffmpeg(args)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
        metadata_file.unlink(missing_ok=True)


def _ffmpeg_tags(meta: dict[str, Any], keys: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Return ffmpeg metadata for the fields a key map names."""
    values = _text_values(meta)
    return {name: values[key] for key, names in keys.items() if key in values for name in names}


def _write_matroska(
    path: Path, meta: dict[str, Any], chapters: list[Chapter], cover: Cover | None, muxer: str
) -> None:
    """Rewrite a Matroska/WebM file's tags and chapters; attach the cover (not in WebM)."""
    attach = cover if muxer == "matroska" else None
    _remux(path, muxer, _ffmpeg_tags(meta, _MATROSKA_KEYS), chapters, attach, [], urls=True)


def _write_other(
    path: Path, meta: dict[str, Any], chapters: list[Chapter], cover: Cover | None
) -> None:
    """Rewrite generic tags and chapters of another container, as far as its muxer keeps them."""
    _remux(path, None, _ffmpeg_tags(meta, _GENERIC_KEYS), chapters, None, [])


_Writer = Callable[[Path, dict[str, Any], list[Chapter], Cover | None], None]
_WRITERS: dict[str, _Writer] = {
    "id3": _write_mp3,
    "wav": _write_wav,
    "ogg": lambda p, m, c, i: _write_vorbis(p, m, c, i, OggVorbis),
    "opus": lambda p, m, c, i: _write_vorbis(p, m, c, i, OggOpus),
    "flac": lambda p, m, c, i: _write_vorbis(p, m, c, i, FLAC),
    "mp4": _write_mp4,
    "mkv": lambda p, m, c, i: _write_matroska(p, m, c, i, "matroska"),
    "webm": lambda p, m, c, i: _write_matroska(p, m, c, i, "webm"),
    "other": _write_other,
}


# reading back


def read_tags(path: Path, fmt: str) -> dict[str, Any]:
    """Return the metadata fields stored in a file, in validate_metadata's shape."""
    path = Path(path)
    container = container_kind(path, fmt)
    raw: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if container in {"id3", "wav"}:
        tags = _load_id3(path, container)
        frame_ids = {
            "title": "TIT2", "artist": "TPE1", "album": "TALB", "track": "TRCK",
            "subtitle": "TIT3", "genre": "TCON", "year": "TDRC", "publisher": "TPUB",
            "license": "TCOP", "tags": "TKWD",
        }  # fmt: skip
        for key, frame_id in frame_ids.items():
            frames = tags.getall(frame_id) if tags is not None else []
            if frames:
                raw[key] = str(frames[0].text[0])
        for key, frame_id in (("summary", "COMM"), ("url", "WXXX"), ("license_url", "WCOP")):
            frames = tags.getall(frame_id) if tags is not None else []
            if frames:
                frame = frames[0]
                raw[key] = str(frame.text[0]) if frame_id == "COMM" else frame.url
    elif container in {"ogg", "opus", "flac"}:
        opener = {"ogg": OggVorbis, "opus": OggOpus, "flac": FLAC}[container]
        comments = opener(path).tags or []
        raw = _first_values(comments, _VORBIS_KEYS)
    elif container == "mp4":
        tags = MP4(path).tags or {}
        for key, atom in _MP4_TEXT.items():
            if atom in tags:
                raw[key] = tags[atom][0]
        for key, atom in _MP4_FREEFORM.items():
            if atom in tags:
                raw[key] = bytes(tags[atom][0]).decode("utf-8")
        simple = {"year": "©day", "summary": "ldes", "tags": "keyw"}
        raw.update({key: tags[atom][0] for key, atom in simple.items() if atom in tags})
        if "trkn" in tags:
            raw["track"] = str(tags["trkn"][0][0])
        if "©xyz" in tags:
            match = _ISO6709_RE.match(tags["©xyz"][0])
            if match:
                latitude, longitude = (float(part) for part in match.groups())
                extra["location"] = {"latitude": latitude, "longitude": longitude}
    else:
        with av.open(os.fspath(path)) as av_container:
            metadata = av_container.metadata
        keys = _GENERIC_KEYS if container == "other" else _MATROSKA_KEYS
        # ffmpeg reads Matroska's TITLE and PART_NUMBER back as title and track, and AVI
        # keeps the album as IPRD, read back as product.
        aliases = {"title": ("title",), "track": ("track",), "album": ("ALBUM", "product")}
        raw = _first_values(metadata.items(), {**keys, **aliases})
    result: dict[str, Any] = dict(raw)
    for key in ("track", "year"):
        if key in result:
            result[key] = int(result[key])
    if "tags" in result:
        result["tags"] = [tag.strip() for tag in result["tags"].split(",") if tag.strip()]
    result.update(extra)
    return {key: result[key] for key in FIELDS if key in result}


def _first_values(
    items: Iterable[tuple[str, str]], keys: dict[str, tuple[str, ...]]
) -> dict[str, str]:
    """Return each field's value under the first of its names found (case-insensitively)."""
    found: dict[str, str] = {}
    for name, value in items:
        found.setdefault(name.upper(), value)
    result = {}
    for key, names in keys.items():
        name = next((n.upper() for n in names if n.upper() in found), None)
        if name is not None:
            result[key] = found[name]
    return result


def _load_id3(path: Path, container: str) -> ID3 | None:
    """Return the ID3 tag of an MP3 or WAV file, or None."""
    if container == "wav":
        return WAVE(path).tags
    try:
        return ID3(path)
    except ID3NoHeaderError:
        return None


def read_cover(path: Path, fmt: str) -> bytes | None:
    """Return the embedded front cover's bytes, or None."""
    path = Path(path)
    container = container_kind(path, fmt)
    if container in {"id3", "wav"}:
        tags = _load_id3(path, container)
        pictures = tags.getall("APIC") if tags is not None else []
        return bytes(pictures[0].data) if pictures else None
    if container == "flac":
        pictures = FLAC(path).pictures
        return bytes(pictures[0].data) if pictures else None
    if container in {"ogg", "opus"}:
        opener = OggVorbis if container == "ogg" else OggOpus
        encoded = (opener(path).tags or {}).get("METADATA_BLOCK_PICTURE")
        return bytes(Picture(base64.b64decode(encoded[0])).data) if encoded else None
    if container == "mp4":
        covers = (MP4(path).tags or {}).get("covr")
        return bytes(covers[0]) if covers else None
    with av.open(os.fspath(path)) as av_container:
        for stream in av_container.streams:
            if _is_cover_stream(stream):
                for packet in av_container.demux(stream):
                    return bytes(packet)
    return None


def read_chapters(path: Path, fmt: str) -> list[Chapter]:
    """Return the chapters stored in a file (MP4: mutagen's reading of the chpl list)."""
    path = Path(path)
    container = container_kind(path, fmt)
    if container in {"id3", "wav"}:
        tags = _load_id3(path, container)
        return _id3_chapters(tags) if tags is not None else []
    if container in {"ogg", "opus", "flac"}:
        opener = {"ogg": OggVorbis, "opus": OggOpus, "flac": FLAC}[container]
        return _vorbis_chapters(opener(path).tags or [])
    if container == "mp4":
        # chpl holds starts in 100 ns units and titles; no ends, no URLs.
        return [
            Chapter(start=round(c.start * 1000) / 1000, title=c.title)
            for c in MP4(path).chapters or []
        ]
    return read_av_chapters(path)


def read_av_chapters(path: Path) -> list[Chapter]:
    """Return the chapters ffmpeg's demuxer sees (Matroska, a QuickTime chapter track)."""
    with av.open(os.fspath(path)) as container:
        found = container.chapters()
    return [
        Chapter(
            start=round(float(c["start"] * c["time_base"]) * 1000) / 1000,
            end=round(float(c["end"] * c["time_base"]) * 1000) / 1000,
            title=c["metadata"].get("title", ""),
            url=c["metadata"].get("URL", ""),
        )
        for c in found
    ]


def _id3_chapters(tags: ID3) -> list[Chapter]:
    """Return CHAP frames in their table of contents' order (else by start)."""
    chaps = {frame.element_id: frame for frame in tags.getall("CHAP")}
    tocs = [toc for toc in tags.getall("CTOC") if toc.flags & CTOCFlags.TOP_LEVEL]
    if tocs:
        order = [element_id for element_id in tocs[0].child_element_ids if element_id in chaps]
    else:
        order = sorted(chaps, key=lambda element_id: chaps[element_id].start_time)
    result = []
    for element_id in order:
        frame = chaps[element_id]
        titles = frame.sub_frames.getall("TIT2")
        urls = frame.sub_frames.getall("WXXX")
        result.append(
            Chapter(
                start=frame.start_time / 1000,
                end=frame.end_time / 1000,
                title=str(titles[0].text[0]) if titles else "",
                url=urls[0].url if urls else "",
            )
        )
    return result


def _vorbis_chapters(comments: Iterable[tuple[str, str]]) -> list[Chapter]:
    """Return chapters from CHAPTERnnn / CHAPTERnnnNAME / CHAPTERnnnURL comments."""
    parts: dict[int, dict[str, str]] = {}
    for key, value in comments:
        match = _VORBIS_CHAPTER_RE.match(key.upper())
        if match:
            parts.setdefault(int(match.group(1)), {})[match.group(2) or "START"] = value
    result = []
    for number in sorted(parts):
        entry = parts[number]
        start = parse_time(entry.get("START", ""))
        if start is None:
            continue  # not a chapter mark we can place
        result.append(Chapter(start=start, title=entry.get("NAME", ""), url=entry.get("URL", "")))
    return result
