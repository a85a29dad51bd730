"""Probe media files with PyAV (the imageio-ffmpeg wheel ships no ffprobe)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import av

from .errors import EngineError
from .ffmpeg import describe

# Demuxers that accept almost any bytes (text-mode art, still images): not media we can process.
_NON_MEDIA_CODECS = frozenset({"bintext", "xbin", "idf", "ansi"})
_STILL_IMAGE_FORMATS = frozenset({"image2", "tty"})
# Codecs with priming (AAC, Opus) may need a few packets before the first frame; random
# bytes misdetected as MP3 never produce one, so a bounded search is enough.
_MAX_PACKETS_TO_FIRST_FRAME = 200


@dataclasses.dataclass
class ProbeResult:
    """Facts about a media file, as PyAV reports them."""

    format_name: str
    duration: float
    audio_codec: str | None
    channels: int | None
    sample_rate: int | None
    bit_rate: int | None
    has_audio: bool
    has_video: bool

    def as_dict(self) -> dict[str, Any]:
        """Return the facts as a JSON-ready dict."""
        return dataclasses.asdict(self)


def probe(path: str | os.PathLike[str]) -> ProbeResult:
    """Return the facts of a media file; raise EngineError unless it holds decodable media."""
    name = describe(path)
    if not os.path.isfile(path):
        raise EngineError(f"File not found: {name}")
    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise EngineError(f"File could not be decoded: {_reason(exc)} ({name})") from exc
    except (OSError, UnicodeError) as exc:
        raise EngineError(f"File could not be read: {name}") from exc

    with container:
        format_name = container.format.name
        audio = next(iter(container.streams.audio), None)
        video = next((s for s in container.streams.video if _is_real_video(s, format_name)), None)
        if audio is None and video is None:
            raise EngineError(f"File could not be decoded: no audio or video stream ({name})")
        # Headers can lie (random bytes sometimes pass as MP3 or H.263): decode a frame to be sure.
        checked = audio if audio is not None else video
        if not _decodes(container, checked):
            kind = "audio" if audio is not None else "video"
            raise EngineError(f"File could not be decoded: no decodable {kind} frames ({name})")

        ctx = audio.codec_context if audio is not None else None
        bit_rate = (audio.bit_rate or (ctx.bit_rate if ctx else 0)) if audio is not None else 0
        if not bit_rate and video is None:
            bit_rate = container.bit_rate or 0
        return ProbeResult(
            format_name=format_name,
            duration=_duration(container, audio or video),
            audio_codec=ctx.codec.canonical_name if ctx is not None else None,
            channels=ctx.channels if ctx is not None else None,
            sample_rate=ctx.sample_rate if ctx is not None else None,
            bit_rate=int(bit_rate) or None,
            has_audio=audio is not None,
            has_video=video is not None,
        )


def _is_real_video(stream: av.stream.Stream, format_name: str) -> bool:
    """Tell a real video stream from cover art, still images and text-art 'video'."""
    if stream.disposition & av.stream.Disposition.attached_pic:
        return False
    if format_name in _STILL_IMAGE_FORMATS or format_name.endswith("_pipe"):
        return False
    return stream.codec_context.codec.canonical_name not in _NON_MEDIA_CODECS


def _decodes(container: av.container.InputContainer, stream: av.stream.Stream) -> bool:
    """Return True once one frame of stream decodes."""
    packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            try:
                if packet.decode():
                    return True
            except av.FFmpegError:
                pass  # one bad packet proves nothing; keep looking within the bound
            if packets >= _MAX_PACKETS_TO_FIRST_FRAME:
                return False
    except av.FFmpegError:
        return False
    return False


def _duration(container: av.container.InputContainer, stream: av.stream.Stream | None) -> float:
    """Return the duration in seconds, from the container or else the stream."""
    if container.duration:
        return container.duration / av.time_base
    if stream is not None and stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return 0.0


def _reason(exc: av.FFmpegError) -> str:
    """Return PyAV's error text in lower case, without the file path it appends."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
