"""Waveform peaks (JSON for the UI) and waveform pictures, in memory that does not grow with length.

ffmpeg decodes the first audio stream to mono 8 kHz float PCM on a pipe; Python folds it into
min/max buckets chunk by chunk, so a three-hour file costs the same memory as a minute. The PNG
is drawn by ffmpeg's showwavespic from those peaks rather than from the file: showwavespic keeps
every input frame until the end of the stream (gigabytes for hours of 48 kHz audio).
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import EngineError
from .ffmpeg import ffmpeg_command, file_url, input_args, run_ffmpeg
from .probe import probe
from .report import ffmpeg_error

# Plenty for a picture (a pixel column covers far more) and 1/12 of 48 kHz stereo's data.
# Content above 4 kHz is filtered out, so hiss and cymbals draw lower than they peak.
SAMPLE_RATE = 8000
WAVEFORM_COLOR = "#2457c5"
# Linear amplitude: a quiet recording should look quiet.
WAVEFORM_SCALE = "lin"
_CHUNK_BYTES = 64 * 1024  # a multiple of 4 (one float32 sample)
# memoryview.cast reads native byte order.
_PCM_FORMAT = "f32le" if sys.byteorder == "little" else "f32be"
_DECIMALS = 4
# A downmix normalised so in-phase channels keep their level (plain -ac 1 adds 3 dB to stereo).
_DOWNMIX = f"aresample={SAMPLE_RATE}:rematrix_maxval=1,aformat=sample_fmts=flt:channel_layouts=mono"


class _Buckets:
    """Fold a stream of samples into min/max buckets of (expected length / buckets) samples.

    The expected length comes from a probe and may be wrong: a longer stream merges buckets
    pairwise whenever there are twice too many (memory stays O(buckets)), and result()
    regroups or stretches whatever was collected into exactly the requested count.
    """

    def __init__(self, buckets: int, expected_samples: int) -> None:
        self.count = buckets
        # At least one sample per bucket, so every boundary lies past the one before.
        self.expected = max(expected_samples, buckets)
        self.scale = 1
        self.done: list[tuple[float, float]] = []
        self.low = math.inf
        self.high = -math.inf
        self.samples = 0
        self.boundary = self._boundary()

    def _boundary(self) -> int:
        """Return the sample index where the bucket being filled ends."""
        return (len(self.done) + 1) * self.expected * self.scale // self.count

    def add(self, samples: memoryview) -> None:
        """Fold a run of float samples into the buckets."""
        start, end = 0, len(samples)
        while start < end:
            take = min(end - start, self.boundary - self.samples)
            part = samples[start : start + take]
            self.low = min(self.low, min(part))
            self.high = max(self.high, max(part))
            start += take
            self.samples += take
            if self.samples == self.boundary:
                self._close()

    def _close(self) -> None:
        """Store the bucket being filled and start the next one."""
        self.done.append((self.low, self.high))
        self.low, self.high = math.inf, -math.inf
        if len(self.done) == 2 * self.count:
            # The probe said much less than there is: halve the resolution to stay bounded.
            pairs = zip(self.done[::2], self.done[1::2], strict=True)
            self.done = [(min(a[0], b[0]), max(a[1], b[1])) for a, b in pairs]
            self.scale *= 2
        self.boundary = self._boundary()

    def result(self) -> list[list[float]]:
        """Return exactly `count` [min, max] pairs, clamped to [-1, 1]."""
        if self.high >= self.low:  # a partly filled last bucket
            self.done.append((self.low, self.high))
            self.low, self.high = math.inf, -math.inf
        have = len(self.done)
        if not have:
            return [[0.0, 0.0] for _ in range(self.count)]
        if have >= self.count:
            groups = [
                self.done[j * have // self.count : (j + 1) * have // self.count]
                for j in range(self.count)
            ]
            pairs = [(min(g[0] for g in group), max(g[1] for g in group)) for group in groups]
        else:
            # The stream was shorter than probed: stretch what there is over the width.
            pairs = [self.done[j * have // self.count] for j in range(self.count)]
        return [[_clamp(low), _clamp(high)] for low, high in pairs]


def waveform_peaks(
    path: str | os.PathLike[str], *, buckets: int = 1000, duration: float | None = None
) -> dict[str, Any]:
    """Return {"buckets", "duration", "peaks": [[min, max], ...]} of a file's mono downmix.

    duration (seconds, e.g. from an earlier probe) spares a probe; the returned duration is
    what was actually decoded.
    """
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    if duration is None:
        duration = probe(path).duration
    folder = _Buckets(buckets, round(max(duration, 0.0) * SAMPLE_RATE))
    for chunk in _pcm_chunks(path):
        folder.add(chunk)
    return {
        "buckets": buckets,
        "duration": round(folder.samples / SAMPLE_RATE, 3),
        "peaks": folder.result(),
    }


def waveform_png(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    width: int = 1800,
    height: int = 280,
    peaks: dict[str, Any] | None = None,
) -> Path:
    """Draw a file's waveform as a width x height PNG (transparent background) at dest.

    peaks, a waveform_peaks() result with `width` buckets, spares decoding the file again.
    """
    if width < 1 or height < 2:
        raise ValueError("the picture must be at least 1x2 pixels")
    if peaks is None or peaks.get("buckets") != width:
        peaks = waveform_peaks(path, buckets=width)
    # Two samples (min, max) per pixel column: showwavespic's peak filter then draws each
    # column's extent, and holds only 2 x width samples.
    values = [value for pair in peaks["peaks"] for value in pair]
    dest_path = Path(dest)
    with tempfile.TemporaryDirectory(prefix="waveform-") as tmp:
        raw = Path(tmp) / "peaks.f32"
        raw.write_bytes(struct.pack(f"<{len(values)}f", *values))
        picture = (
            f"showwavespic=s={width}x{height}:colors={WAVEFORM_COLOR}:split_channels=0"
            f":scale={WAVEFORM_SCALE}:filter=peak:draw=full"
        )
        args = [
            "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", file_url(raw),
            "-filter_complex", picture, "-frames:v", "1", "-update", "1",
            "-c:v", "png", "-f", "image2", "-y", file_url(dest_path),
        ]  # fmt: skip
        run_ffmpeg(args)
    return dest_path


def _pcm_chunks(path: str | os.PathLike[str]) -> Iterator[memoryview]:
    """Yield the file's first audio stream as mono float32 samples, a chunk at a time."""
    cmd = [
        *ffmpeg_command("level+error"),
        *input_args(path), "-map", "0:a:0",
        "-af", _DOWNMIX, "-f", _PCM_FORMAT, "pipe:1",
    ]  # fmt: skip
    # stderr goes to a file: the pipe that is read is stdout, and a full stderr pipe nobody
    # reads would stall ffmpeg.
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as exc:
            raise EngineError(f"Could not start ffmpeg ({cmd[0]}): {exc.strerror or exc}") from exc
        stdout = proc.stdout
        if stdout is None:  # pragma: no cover - stdout=PIPE always gives one
            raise EngineError("ffmpeg's output could not be read")
        try:
            rest = b""
            while block := stdout.read(_CHUNK_BYTES):
                data = rest + block if rest else block
                usable = len(data) - len(data) % 4
                rest = data[usable:]
                if usable:
                    yield memoryview(data)[:usable].cast("f")
            returncode = proc.wait()
        finally:
            # Also when the consumer stops early or raises: never leave ffmpeg running.
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stdout.close()
        if returncode != 0:
            errors.seek(0)
            lines = errors.read().decode("utf-8", "replace").splitlines()
            raise ffmpeg_error(lines, path)


def _clamp(value: float) -> float:
    """Return value within [-1, 1], rounded for a compact JSON document."""
    return round(min(1.0, max(-1.0, value)), _DECIMALS)
