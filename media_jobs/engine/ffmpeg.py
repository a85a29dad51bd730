"""Locate and run the ffmpeg binary, with progress reporting and cancellation."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from .errors import EngineCancelled, EngineError

ProgressCallback = Callable[[float, str], "bool | None"]

# Enough to keep every ebur128 summary (printed last) even after a flood of decoder warnings.
_STDERR_TAIL_LINES = 4000
_PROGRESS_PERIOD = "0.5"
_LEVEL_RE = re.compile(r"\[(error|fatal)\]\s*(.*)")
_PREFIX_RE = re.compile(r"^(\[[^\]]*\]\s*)+")


def _django_setting(name: str) -> object | None:
    """Return a Django setting, or None when Django is absent or not configured."""
    try:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:
        return None
    try:
        return getattr(settings, name, None)
    except (ImproperlyConfigured, ImportError):  # no settings, or a settings module that won't load
        return None


def ffmpeg_binary() -> str:
    """Return the ffmpeg to run: settings.FFMPEG_BINARY, $FFMPEG_BINARY, else imageio-ffmpeg's."""
    configured = _django_setting("FFMPEG_BINARY") or os.environ.get("FFMPEG_BINARY")
    if configured:
        return str(configured)
    return _bundled_ffmpeg()


@lru_cache(maxsize=1)
def _bundled_ffmpeg() -> str:
    """Return the ffmpeg shipped in the imageio-ffmpeg wheel."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise EngineError("No ffmpeg binary: set FFMPEG_BINARY or install imageio-ffmpeg.") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def engine_threads() -> int:
    """Return the configured thread cap for ffmpeg codecs and filters (0 lets ffmpeg decide)."""
    value = _django_setting("ENGINE_THREADS")
    if value is None:
        value = os.environ.get("ENGINE_THREADS", "0")
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


def file_url(path: str | os.PathLike[str]) -> str:
    """Return an ffmpeg URL for a local path that no option or protocol parsing can misread."""
    return "file:" + os.path.abspath(os.fspath(path))


class FFmpegFailed(EngineError):
    """Report a non-zero ffmpeg exit with the errors it printed."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__(f"ffmpeg failed: {'; '.join(messages[-3:]) or 'unknown error'}")


class Reporter:
    """Forward monotonic progress to a user callback and turn a False answer into a cancel."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        """Report overall progress; raise EngineCancelled if the callback returns False."""
        if self.callback is None:
            return
        # Re-renders must never make the bar go backwards.
        fraction = max(self.last, min(1.0, max(0.0, fraction)))
        self.last = fraction
        if self.callback(fraction, stage) is False:
            raise EngineCancelled("Processing was cancelled.")

    def span(self, start: float, end: float, stage: str) -> Callable[[float], None]:
        """Return a callback mapping a pass's own 0..1 progress into [start, end]."""

        def report(fraction: float) -> None:
            self(start + (end - start) * fraction, stage)

        return report


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start an ffmpeg process: every engine pass goes through here (tests count them)."""
    return subprocess.Popen(cmd, **kwargs)


def run_ffmpeg(
    args: Sequence[str],
    *,
    duration: float | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> list[str]:
    """Run ffmpeg with args and return its stderr lines; raise EngineError on failure.

    on_progress receives the fraction of duration written so far; any exception it raises
    (EngineCancelled included) kills ffmpeg and propagates.
    """
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info"]
    seconds = duration or 0.0
    watch = on_progress is not None and seconds > 0
    if watch:
        cmd += ["-progress", "pipe:1", "-stats_period", _PROGRESS_PERIOD]
    cmd += list(args)
    if on_progress is not None:
        on_progress(0.0)  # also lets a cancel land before any work starts
    try:
        proc = spawn(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if watch else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise EngineError(f"Could not start ffmpeg ({cmd[0]}): {exc.strerror or exc}") from exc

    tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
    # Drain stderr on a thread so a chatty ffmpeg can never block on a full pipe.
    reader = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
    reader.start()
    try:
        if watch and on_progress is not None and proc.stdout is not None:
            for raw in proc.stdout:
                key, _, value = raw.decode("ascii", "replace").strip().partition("=")
                if key == "out_time_us" and value.lstrip("-").isdigit():
                    on_progress(max(0.0, int(value) / 1_000_000 / seconds))
        returncode = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    lines = list(tail)
    if returncode != 0:
        messages = error_messages(lines)
        # Messages reach users: show file names, not where the server keeps them.
        for arg in args:
            if arg.startswith("file:"):
                path = arg.removeprefix("file:")
                messages = [
                    m.replace(arg, describe(path)).replace(path, describe(path)) for m in messages
                ]
        raise FFmpegFailed(messages)
    if on_progress is not None:
        on_progress(1.0)
    return lines


def _drain(stream: IO[bytes], sink: collections.deque[str]) -> None:
    """Copy a byte stream's lines into sink until EOF."""
    with stream:
        for raw in stream:
            sink.append(raw.decode("utf-8", "replace").rstrip("\r\n"))


def error_messages(lines: Sequence[str]) -> list[str]:
    """Return the distinct error messages ffmpeg printed, without log prefixes."""
    messages: list[str] = []
    for line in lines:
        match = _LEVEL_RE.search(line)
        if match:
            message = match.group(2).strip()
            if message and message not in messages:
                messages.append(message)
    return messages or [_PREFIX_RE.sub("", line).strip() for line in lines[-3:] if line.strip()]


def describe(path: str | os.PathLike[str]) -> str:
    """Return a short file name for messages, never a full server path."""
    return Path(os.fspath(path)).name
