"""Locate and run the ffmpeg binary, with progress reporting and cancellation."""

from __future__ import annotations

import collections
import contextlib
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
# More concurrent processes than this buy little: every one decodes the input again.
_MAX_WORKERS = 4
# How often (s) run_parallel wakes to report progress and notice a cancel, and how long it
# gives a process that closed its progress pipe to exit.
_POLL_S = 0.2
_EXIT_GRACE_S = 1.0
# PCM demuxers hand out 4 KiB packets (1,024 stereo 16-bit samples) unless told otherwise;
# every packet then crosses ffmpeg's demux, decode and filter threads one at a time, and on
# a virtualised host those hand-offs cost as much as the filters. 64 KiB packets (0.37 s of
# CD audio) cut pass 1 by a quarter on the 2-core VM the bench ran on.
_PCM_PACKET_BYTES = 65536
_PCM_DEMUXERS = frozenset({"wav", "w64"})


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


def ffmpeg_command(loglevel: str = "level+info") -> list[str]:
    """Return the start of every engine ffmpeg command: binary, quiet logs, filter threads.

    Filters get one thread unless ENGINE_THREADS says otherwise: slice threading wakes a
    thread pool for every audio frame, which on a virtualised host costs more than the
    per-channel work it splits (the engine runs processes side by side instead).
    """
    threads = str(engine_threads() or 1)
    return [
        ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel,
        "-filter_threads", threads, "-filter_complex_threads", threads,
    ]  # fmt: skip


def engine_workers() -> int:
    """Return how many ffmpeg processes may work on one job at once (its CPU cores, capped).

    settings.ENGINE_WORKERS or $ENGINE_WORKERS overrides; 1 keeps every pass in one process.
    """
    value = _django_setting("ENGINE_WORKERS")
    if value is None:
        value = os.environ.get("ENGINE_WORKERS", "0")
    try:
        configured = int(str(value))
    except ValueError:
        configured = 0
    if configured > 0:
        return configured
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_WORKERS))


def demuxer_args(format_name: str | None) -> list[str]:
    """Return input options that read a container of this format (PyAV's name) faster."""
    if format_name in _PCM_DEMUXERS:
        return ["-max_size", str(_PCM_PACKET_BYTES)]
    return []


def input_args(
    path: str | os.PathLike[str],
    *,
    format_name: str | None = None,
    start: float = 0.0,
    duration: float | None = None,
    video: bool = False,
) -> list[str]:
    """Return the options reading one input file: its audio (or video) streams only.

    format_name (a probe's) lets PCM containers be read in large packets (demuxer_args);
    start and duration trim with input seeking, so nothing outside is decoded.
    """
    args = ["-an" if video else "-vn", "-sn", "-dn"]
    threads = engine_threads()
    if threads and not video:
        args += ["-threads", str(threads)]
    if start:
        args += ["-ss", f"{start:.6f}"]
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    return [*args, *demuxer_args(format_name), "-i", file_url(path)]


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
    cmd = ffmpeg_command()
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
        raise _failure(args, lines)
    if on_progress is not None:
        on_progress(1.0)
    return lines


def run_parallel(
    runs: Sequence[tuple[Sequence[str], float]],
    *,
    on_progress: Callable[[float], None] | None = None,
) -> list[list[str]]:
    """Run several ffmpeg commands at once and return each one's stderr lines, in order.

    runs holds (args, seconds of media it reads); on_progress gets the share of all those
    seconds done so far, always from the calling thread, so it may cancel (any exception
    kills every process and propagates). The first failure kills the rest and raises.
    """
    base = ffmpeg_command()
    base += ["-progress", "pipe:1", "-stats_period", _PROGRESS_PERIOD]
    total = sum(seconds for _, seconds in runs) or 1.0
    done = [0.0] * len(runs)
    ended = threading.Event()  # set as a process closes its progress pipe (it is exiting)
    pipes_closed = [False] * len(runs)
    tails: list[collections.deque[str]] = []
    procs: list[subprocess.Popen[bytes]] = []
    threads: list[threading.Thread] = []
    if on_progress is not None:
        on_progress(0.0)
    try:
        for index, (args, seconds) in enumerate(runs):
            try:
                proc = spawn(
                    [*base, *args],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:
                raise EngineError(
                    f"Could not start ffmpeg ({base[0]}): {exc.strerror or exc}"
                ) from exc
            procs.append(proc)
            tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
            tails.append(tail)
            # Readers only store what they read: progress is reported from this thread.
            for target, stream_args in (
                (_drain, (proc.stderr, tail)),
                (_watch, (proc.stdout, done, index, seconds, (ended, pipes_closed))),
            ):
                thread = threading.Thread(target=target, args=stream_args, daemon=True)
                thread.start()
                threads.append(thread)
        while True:
            failed = next((k for k, p in enumerate(procs) if (p.poll() or 0) != 0), None)
            if failed is not None:
                procs[failed].wait()
                for thread in threads:
                    thread.join(timeout=10)
                raise _failure(runs[failed][0], list(tails[failed]))
            if all(p.poll() is not None for p in procs):
                break
            if on_progress is not None:
                on_progress(min(1.0, sum(done) / total))
            # Wake as soon as a process ends: the next pass waits on the last one. ffmpeg
            # closes its progress pipe last thing before it exits.
            if ended.wait(_POLL_S):
                ended.clear()
                for proc, closed in zip(procs, pipes_closed, strict=True):
                    if closed and proc.poll() is None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(timeout=_EXIT_GRACE_S)
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=10)
    if on_progress is not None:
        on_progress(1.0)
    return [list(tail) for tail in tails]


def _watch(
    stream: IO[bytes],
    done: list[float],
    index: int,
    seconds: float,
    closing: tuple[threading.Event, list[bool]],
) -> None:
    """Record into done[index] how many seconds of media ffmpeg's -progress says it wrote.

    At the pipe's end, mark closing[1][index] and set closing[0]: the process is exiting.
    """
    with stream:
        for raw in stream:
            key, _, value = raw.decode("ascii", "replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit():
                done[index] = min(seconds, max(0.0, int(value) / 1_000_000))
    ended, closed = closing
    closed[index] = True
    ended.set()


def _failure(args: Sequence[str], lines: list[str]) -> FFmpegFailed:
    """Return the error for a failed ffmpeg run, naming files but never their directories."""
    messages = error_messages(lines)
    # Messages reach users: show file names, not where the server keeps them.
    for arg in args:
        if arg.startswith("file:"):
            path = arg.removeprefix("file:")
            messages = [
                m.replace(arg, describe(path)).replace(path, describe(path)) for m in messages
            ]
    return FFmpegFailed(messages)


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
