"""Chapter marks: parse Auphonic's text and JSON forms, fill in ends, render them as text.

The text form (Auphonic's chapters.txt) has one chapter per line::

    00:00:00.000 Intro <https://example.com>
    00:02:18 Second Chapter
    04:41.5 Third Chapter

a start (HH:MM:SS[.mmm] or MM:SS[.mmm]), a title and an optional http(s) URL in angle
brackets. Blank lines and lines starting with ``#`` are ignored. The JSON form is Auphonic's
``[{"start": "00:02:18", "title": "...", "url": "...", "image": "..."}]``, as a list or as a
JSON string; start may also be a number of seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

# The MP4 chapter list (Nero chpl) stores its count in one byte.
MAX_CHAPTERS = 255
MAX_TITLE_LENGTH = 1000

_JSON_KEYS = frozenset({"start", "title", "url", "image"})
_TIME_RE = re.compile(r"^(?:(\d+):)?(\d+):(\d+)(?:\.(\d{1,3}))?$")
_SECONDS_RE = re.compile(r"^\d+(?:\.\d+)?$")
# The time is the first token; a URL, if any, is the last one, in angle brackets.
_LINE_RE = re.compile(r"^(?P<time>\S+)(?:\s+(?P<rest>.*?))?\s*$")
_URL_TAIL_RE = re.compile(r"^(?P<title>.*?)\s*<(?P<url>[^<>]*)>$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass
class Chapter:
    """One chapter mark: start (seconds), title, optional link and image, end once known."""

    start: float
    title: str
    url: str = ""
    image: str = ""
    end: float | None = None


def parse_chapters(value: str | list[Any] | None) -> list[Chapter]:
    """Return chapters from the text form, a JSON list or a JSON string; raise ValueError."""
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("utf-8-sig")
    if isinstance(value, str):
        text = value.lstrip("\ufeff").strip()
        if text.startswith("["):
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"chapters: invalid JSON ({exc.msg} at line {exc.lineno})"
                ) from exc
            return _from_json(loaded)
        return _from_text(text)
    if isinstance(value, list):
        return _from_json(value)
    raise ValueError(f"chapters: expected text or a list, got {type(value).__name__}")


def _from_text(text: str) -> list[Chapter]:
    """Parse the one-chapter-per-line text form."""
    chapters: list[tuple[str, Chapter]] = []
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number}"
        match = _LINE_RE.match(line)
        assert match is not None  # a non-blank line always has a first token
        start = parse_time(match.group("time"))
        if start is None:
            errors.append(f"{where}: {match.group('time')!r} is not a valid time")
            continue
        rest = match.group("rest") or ""
        title, url = rest, ""
        tail = _URL_TAIL_RE.match(rest)
        if tail:
            title, url = tail.group("title"), tail.group("url").strip()
        problem = _check_title(title.strip()) or (_check_url(url) if tail else None)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        chapters.append((where, Chapter(start=start, title=title.strip(), url=url)))
    return _finish(chapters, errors)


def _from_json(items: Any) -> list[Chapter]:
    """Parse Auphonic's JSON list of chapter objects."""
    if not isinstance(items, list):
        raise ValueError(f"chapters: expected a list of chapters, got {type(items).__name__}")
    chapters: list[tuple[str, Chapter]] = []
    errors: list[str] = []
    for index, item in enumerate(items):
        where = f"chapters[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be an object with start and title")
            continue
        unknown = sorted(str(key) for key in set(item) - _JSON_KEYS)
        if unknown:
            errors.append(f"{where}: unknown key(s) {', '.join(unknown)}")
            continue
        raw_start = item.get("start")
        start = _json_start(raw_start)
        if start is None:
            errors.append(f"{where}: start {raw_start!r} is not a valid time")
            continue
        title, url, image = item.get("title"), item.get("url") or "", item.get("image") or ""
        problem = None
        if not isinstance(title, str):
            problem = "title is required" if title is None else "title must be a string"
        elif not isinstance(url, str):
            problem = "url must be a string"
        elif not isinstance(image, str):
            problem = "image must be a string"
        else:
            problem = _check_title(title.strip()) or (_check_url(url.strip()) if url else None)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        assert isinstance(title, str) and isinstance(url, str) and isinstance(image, str)
        chapter = Chapter(start=start, title=title.strip(), url=url.strip(), image=image.strip())
        chapters.append((where, chapter))
    return _finish(chapters, errors)


def _finish(chapters: list[tuple[str, Chapter]], errors: list[str]) -> list[Chapter]:
    """Check the order of parsed chapters and raise every error found."""
    for (_, before), (where, chapter) in itertools.pairwise(chapters):
        if chapter.start <= before.start:
            errors.append(
                f"{where}: starts at {format_time(chapter.start)}, not after the previous "
                f"chapter ({format_time(before.start)}); starts must increase"
            )
    if len(chapters) > MAX_CHAPTERS:
        errors.append(f"chapters: at most {MAX_CHAPTERS} chapters, got {len(chapters)}")
    if errors:
        raise ValueError("; ".join(errors))
    return [chapter for _, chapter in chapters]


def parse_time(text: str) -> float | None:
    """Return seconds (to the millisecond) from HH:MM:SS[.mmm] or MM:SS[.mmm], else None."""
    match = _TIME_RE.match(text)
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
        return None
    millis = int((fraction or "").ljust(3, "0"))
    total = (int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)) * 1000 + millis
    return total / 1000


def _json_start(value: Any) -> float | None:
    """Return seconds from a JSON start: a timestamp, or seconds as a number or string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _SECONDS_RE.match(value.strip()):
        seconds = float(value.strip())
    elif isinstance(value, str):
        return parse_time(value.strip())
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return round(seconds * 1000) / 1000


def _check_title(title: str) -> str | None:
    """Return what is wrong with a chapter title, or None."""
    if not title:
        return "the title is empty"
    if _CONTROL_RE.search(title):
        return "the title must be one line without control characters"
    if len(title) > MAX_TITLE_LENGTH:
        return f"the title is longer than {MAX_TITLE_LENGTH} characters"
    return None


def _check_url(url: str) -> str | None:
    """Return what is wrong with a chapter URL, or None."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        return f"{url!r} is not an http(s) URL"
    if any(ch.isspace() for ch in url) or _CONTROL_RE.search(url):
        return f"{url!r} must not contain spaces or control characters"
    return None


def fill_ends(chapters: list[Chapter], duration: float) -> list[Chapter]:
    """Set each chapter's end to the next start (the last one's to duration) and return them."""
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    for index, chapter in enumerate(chapters):
        if chapter.start >= duration:
            raise ValueError(
                f"chapter {index + 1} ({chapter.title!r}) starts at {format_time(chapter.start)}, "
                f"at or after the end of the audio ({format_time(duration)})"
            )
        if index and chapter.start <= chapters[index - 1].start:
            raise ValueError(
                f"chapter {index + 1} ({chapter.title!r}) does not start after the last"
            )
    for chapter, following in itertools.pairwise(chapters):
        chapter.end = following.start
    if chapters:
        chapters[-1].end = duration
    return chapters


def format_time(seconds: float) -> str:
    """Return seconds as HH:MM:SS.mmm."""
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def chapters_text(chapters: Iterable[Chapter]) -> str:
    """Render chapters in the text form, one line each (what append_chapters appends)."""
    lines = []
    for chapter in chapters:
        line = f"{format_time(chapter.start)} {chapter.title}"
        lines.append(f"{line} <{chapter.url}>" if chapter.url else line)
    return "\n".join(lines)
