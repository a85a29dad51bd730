"""The built-in ffmpeg engine: probe, measure loudness, process and encode audio."""

from __future__ import annotations

from .errors import EngineCancelled, EngineError, ParamsError
from .ffmpeg import ffmpeg_binary
from .loudness import Loudness, measure
from .params import FORMATS, validate_params
from .probe import ProbeResult, probe
from .processing import OutputFile, ProcessResult, process

__all__ = [
    "FORMATS",
    "EngineCancelled",
    "EngineError",
    "Loudness",
    "OutputFile",
    "ParamsError",
    "ProbeResult",
    "ProcessResult",
    "ffmpeg_binary",
    "measure",
    "probe",
    "process",
    "validate_params",
]
