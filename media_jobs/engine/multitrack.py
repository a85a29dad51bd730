"""Prepare one input from several (Auphonic's multi_input_files) before process() runs.

process() takes one input. Productions with an intro, an outro or parallel tracks are first
rendered here into a single intermediate (WAV, 32-bit float: nothing clips, whatever the gains)
at the main input's sample rate, which process() then filters, normalises and encodes as usual.

Intro and outro (one ffmpeg run to measure, one to join):
  every piece is measured with ebur128 in the main's rate and layout, intro and outro get the
  gain that puts their integrated loudness on the main's, so that normalising the whole brings
  all three to the target together. The pieces are butt-joined with the concat filter: produced
  intros and outros carry their own fades, and the output lasts exactly the sum of the three. An
  intro's or outro's `offset` asks for that many seconds of overlap instead, joined with an
  equal-power crossfade (acrossfade).

Multitrack (one ffmpeg run to analyse every track, one to mix):
  1. analyse: per track, ebur128 (loudness before) and 50 ms RMS windows (astats) written to a
     file, whose 10th percentile is the track's noise floor and 95th its speech level;
  2. mix: one filtergraph takes every track; per track: format, 80 Hz high-pass (`filtering`),
     afftdn (`denoise`, noise floor from 1.), static level match (`leveler`), adelay by the
     track's `offset`, apad to the longest track. Foreground tracks then pass `gate` (agate, its
     threshold 10 dB over the track's noise floor) and `crossgate` (sidechaingate keyed by a
     per-track "am I dominated" mask, see _crossgate_graph); background tracks are ducked under
     the sum of the foreground tracks (sidechaincompress). Every processed track is measured
     (ebur128), optionally written to its own file (for the "tracks" zip outputs) and mixed with
     amix normalize=0, so the mixdown is the plain sum of what the track files hold.

backforeground "auto": a track whose id names music (music, jingle, bed, ...) is background,
anything else foreground: a rule a user can predict and steer by naming the track.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import EngineError, ParamsError
from .ffmpeg import ProgressCallback, Reporter, file_url, input_args
from .loudness import DENORMAL_GUARD, Loudness, parse_summaries, run_checked
from .params import FORMATS, as_flag, as_number
from .probe import ProbeResult, probe

TYPES = ("intro", "outro", "multitrack")
ROLES = ("foreground", "background", "auto")
TRACK_FORMATS = ("wav", "flac")
# Each track is one ffmpeg input and one term of the crossgate expressions.
MAX_TRACKS = 32
MAX_OFFSET = 24 * 3600.0
HIGHPASS_HZ = 80
# Intro/outro loudness matching: never more gain than this (dB), whatever the measurements.
MAX_MATCH_GAIN = 30.0
# Multitrack leveler: a static gain per track, at most this much (dB).
MAX_LEVELER_GAIN = 20.0

# Track analysis: RMS of short windows; a low percentile is the noise floor (room tone between
# phrases), a high one the level of active speech.
WINDOW_SECONDS = 0.05
FLOOR_PERCENTILE = 10
ACTIVE_PERCENTILE = 95
# Windows at or below this are digital silence (padding, muted stretches), not a noise floor.
DIGITAL_SILENCE_DB = -120.0

# Gate: threshold this far (dB) over the noise floor, never more than half-way to the speech
# level; a track whose speech stands less than GATE_MIN_SNR over its floor is left alone (the
# gate would chop quiet words; denoise is the tool there).
GATE_ABOVE_FLOOR = 10.0
GATE_MIN_SNR = 15.0
GATE_RANGE_DB = -24.0
GATE_RATIO = 4.0

# Crossgate: a speech track is bleed where another track is this much (dB) louder.
CROSSGATE_MARGIN_DB = 6.0
CROSSGATE_RANGE_DB = -24.0
# The comparison runs on power envelopes smoothed at this corner, at this rate (cheap).
ENVELOPE_HZ = 8
ENVELOPE_RATE = 1000
# Power below which nobody counts as talking (-70 dBFS): everyone's gate stays open.
ENVELOPE_QUIET = 1e-7

# Ducking: background tracks drop by about DUCK_DB while the foreground speaks. The key is
# scaled so speech sits at DUCK_KEY_LEVEL dBFS; the threshold is DUCK_HEADROOM under it.
DUCK_DB = 12.0
DUCK_KEY_LEVEL = -20.0
DUCK_HEADROOM = 15.0
# The threshold stays this far (dB) over the foreground's noise, so room tone never ducks.
DUCK_OVER_NOISE = 6.0
# A slow release keeps the music from pumping between words (the detector's time constant is
# a quarter of it).
DUCK_ATTACK_MS = 50
DUCK_RELEASE_MS = 1500

BACKGROUND_WORDS = ("music", "musik", "jingle", "bed", "background", "atmo", "ambience", "sfx")

# `item` names one of the workspace's stored items (our way of pointing at a file; the job
# service resolves it); Auphonic's `input_file`/`service` are kept for the remote provider.
_ENTRY_KEYS = {"type", "id", "input_file", "service", "algorithms", "offset", "item"}
_FLAG_ALGORITHMS = ("filtering", "denoise", "leveler", "gate", "crossgate")
_TRACK_ALGORITHMS = {*_FLAG_ALGORITHMS, "hipfilter", "denoiseamount", "backforeground"}
# Top-level algorithms that multitrack applies per track here; process() must not repeat them.
_CONSUMED_BY_MULTITRACK = (
    "gate", "crossgate", "filtering", "hipfilter", "denoise", "denoiseamount", "backforeground",
)  # fmt: skip
_MAX_ID = 100
_INTERMEDIATE_CODEC = ("-c:a", "pcm_f32le", "-rf64", "auto", "-f", "wav")


@dataclasses.dataclass
class InputSpec:
    """One entry of multi_input_files, resolved to a local file by the service layer."""

    type: str  # "intro" | "outro" | "multitrack"
    path: Path
    id: str = ""  # readable track id (multitrack)
    # filtering, denoise, denoiseamount, leveler, gate, crossgate, backforeground.
    algorithms: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Multitrack: where the track starts (s). Intro/outro: overlap with the main audio (s).
    offset: float = 0.0


@dataclasses.dataclass
class Prepared:
    """The single intermediate that process() takes, and what preparing it found."""

    path: Path
    duration: float
    statistics: dict[str, Any]
    # Each processed track, aligned to the mixdown (float WAV): zip_tracks() packs them.
    tracks: list[Path]
    # params for process(): everything consumed here removed (see process_params).
    params: dict[str, Any]
    # "wav"/"flac" for every {"format": "tracks", "ending": "wav.zip"|"flac.zip"} output.
    track_formats: list[str]


@dataclasses.dataclass
class _Piece:
    """One piece of an intro/main/outro join."""

    kind: str  # "intro", "outro", or the main's label
    id: str
    input_args: list[str]
    span: float  # seconds read from it


@dataclasses.dataclass
class _Track:
    """One multitrack track: what it asks for and what the analysis found."""

    index: int
    spec: InputSpec
    info: ProbeResult
    role: str  # "foreground" | "background"
    filtering: bool
    denoise: bool
    denoise_amount: float  # dB; 0: afftdn's default
    leveler: bool
    gate: bool
    crossgate: bool
    before: Loudness | None = None
    floor: float | None = None  # dBFS RMS, after the high-pass
    active: float | None = None  # dBFS RMS
    gain: float = 0.0  # leveler, dB
    gate_threshold: float | None = None  # dBFS, after the leveler gain
    gate_skipped: str | None = None
    after: Loudness | None = None
    output: Path | None = None

    @property
    def name(self) -> str:
        """Return the track's id, or its position when it has none."""
        return self.spec.id or f"track {self.index + 1}"


# Validation


def validate_multi_inputs(
    value: list[dict[str, Any]] | None, *, is_multitrack: bool | None = None
) -> list[dict[str, Any]]:
    """Return multi_input_files normalised, or raise ParamsError naming every bad entry.

    Shape only (no files are read): types, unique ids, at most one intro and one outro, at
    least two multitrack tracks. is_multitrack, when given, must agree with the tracks.
    """
    if value is None:
        value = []
    if not isinstance(value, list):
        raise ParamsError({"multi_input_files": "must be a list of input files"})
    errors: dict[str, str] = {}
    result: list[dict[str, Any]] = []
    seen_ids: dict[str, int] = {}
    by_type: dict[str, list[int]] = {kind: [] for kind in TYPES}
    for index, item in enumerate(value):
        where = f"multi_input_files[{index}]"
        if not isinstance(item, dict):
            errors[where] = "must be an object"
            continue
        for key in sorted(set(item) - _ENTRY_KEYS):
            errors[f"{where}.{key}"] = "unknown option"
        kind = item.get("type")
        if kind not in TYPES:
            errors[f"{where}.type"] = f"must be one of {', '.join(TYPES)}, got {kind!r}"
            continue
        by_type[kind].append(index)
        entry: dict[str, Any] = {"type": kind}

        ident = _track_id(item.get("id"), f"{where}.id", errors)
        if kind == "multitrack" and not ident and f"{where}.id" not in errors:
            errors[f"{where}.id"] = "every multitrack track needs an id"
        if ident:
            if ident in seen_ids:
                errors[f"{where}.id"] = (
                    f"duplicate id {ident!r} (also used by multi_input_files[{seen_ids[ident]}])"
                )
            seen_ids.setdefault(ident, index)
        entry["id"] = ident

        offset = as_number(item.get("offset"), f"{where}.offset", errors)
        if offset is not None and not 0 <= offset <= MAX_OFFSET:
            errors[f"{where}.offset"] = f"must be between 0 and {MAX_OFFSET:g} seconds"
        entry["offset"] = offset or 0.0

        algorithms = item.get("algorithms")
        if algorithms in (None, {}):
            entry["algorithms"] = {}
        elif kind != "multitrack":
            errors[f"{where}.algorithms"] = "only multitrack tracks take algorithms"
        elif not isinstance(algorithms, dict):
            errors[f"{where}.algorithms"] = "must be an object"
        else:
            entry["algorithms"] = _track_algorithms(algorithms, f"{where}.algorithms", errors)

        if item.get("item") is not None:
            value = item["item"]
            if isinstance(value, bool) or not str(value).isdigit():
                errors[f"{where}.item"] = "must be the id of an item"
            else:
                entry["item"] = int(value)
        for key in ("input_file", "service"):
            if key in item:
                if not isinstance(item[key], str):
                    errors[f"{where}.{key}"] = "must be a string"
                else:
                    entry[key] = item[key]
        result.append(entry)

    for kind in ("intro", "outro"):
        if len(by_type[kind]) > 1:
            places = " and ".join(f"multi_input_files[{i}]" for i in by_type[kind])
            errors[f"multi_input_files[{by_type[kind][1]}].type"] = (
                f"at most one {kind} per production ({places} are both {kind}s)"
            )
    tracks = len(by_type["multitrack"])
    if tracks == 1:
        errors["multi_input_files"] = "a multitrack production needs at least 2 tracks, got 1"
    elif tracks > MAX_TRACKS:
        errors["multi_input_files"] = f"at most {MAX_TRACKS} multitrack tracks, got {tracks}"
    if is_multitrack is True and not tracks:
        errors["is_multitrack"] = "needs multi_input_files of type multitrack"
    elif is_multitrack is False and tracks:
        errors["is_multitrack"] = "must be true when multi_input_files holds multitrack tracks"
    if errors:
        raise ParamsError(errors)
    return result


def _track_algorithms(
    section: dict[str, Any], where: str, errors: dict[str, str]
) -> dict[str, Any]:
    """Return a track's algorithms normalised; only the keys it sets (the rest inherit)."""
    result: dict[str, Any] = {}
    for key in sorted(set(section) - _TRACK_ALGORITHMS):
        choices = ", ".join(sorted(_TRACK_ALGORITHMS))
        errors[f"{where}.{key}"] = f"unknown track algorithm (choose from {choices})"
    for key in _FLAG_ALGORITHMS:
        # Auphonic renamed hipfilter to filtering; accept either.
        raw = section.get(key, section.get("hipfilter")) if key == "filtering" else section.get(key)
        if raw is not None:
            result[key] = as_flag(raw, f"{where}.{key}", errors)
    amount = as_number(section.get("denoiseamount"), f"{where}.denoiseamount", errors)
    if amount is not None:
        if not 0 <= amount <= 100:
            errors[f"{where}.denoiseamount"] = "must be between 0 (automatic) and 100 dB"
        result["denoiseamount"] = amount
    role = section.get("backforeground")
    if role is not None:
        if not isinstance(role, str) or role.strip().lower() not in ROLES:
            errors[f"{where}.backforeground"] = f"must be one of {', '.join(ROLES)}, got {role!r}"
        else:
            result["backforeground"] = role.strip().lower()
    return result


def _track_id(value: Any, where: str, errors: dict[str, str]) -> str:
    """Return a track id: a short, printable string (it names the track's file)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[where] = "must be a string"
        return ""
    ident = value.strip()
    if len(ident) > _MAX_ID or any(not ch.isprintable() for ch in ident):
        errors[where] = f"must be printable text of at most {_MAX_ID} characters"
        return ""
    return ident


def track_formats(params: dict[str, Any]) -> list[str]:
    """Return "wav"/"flac" for each {"format": "tracks"} output (Auphonic's wav.zip/flac.zip)."""
    outputs = params.get("output_files") or []
    found: list[str] = []
    errors: dict[str, str] = {}
    for index, item in enumerate(outputs if isinstance(outputs, list) else []):
        if not isinstance(item, dict) or str(item.get("format", "")).lower() != "tracks":
            continue
        ending = str(item.get("ending") or "wav.zip").lower().lstrip(".")
        fmt = ending.removesuffix(".zip")
        if fmt not in TRACK_FORMATS or not ending.endswith(".zip"):
            errors[f"output_files[{index}].ending"] = (
                f"tracks come as wav.zip or flac.zip, got {item.get('ending')!r}"
            )
        elif fmt not in found:
            found.append(fmt)
    if errors:
        raise ParamsError(errors)
    return found


def process_params(params: dict[str, Any], *, multitrack: bool, joined: bool) -> dict[str, Any]:
    """Return params for process() on a prepared file, without what preparing consumed.

    Always: multi_input_files, is_multitrack and the "tracks" outputs. Multitrack: the
    per-track algorithms (gate, crossgate, filtering, denoise, backforeground); the leveler
    stays, for the mixdown. Joined (intro/outro): the trim window, already applied to the main.
    """
    result = copy.deepcopy(params)
    result.pop("multi_input_files", None)
    result.pop("is_multitrack", None)
    outputs = result.get("output_files")
    if isinstance(outputs, list):
        kept = [
            item
            for item in outputs
            if not (isinstance(item, dict) and str(item.get("format", "")).lower() == "tracks")
        ]
        if kept:
            result["output_files"] = kept
        else:
            # Only tracks asked for: process() still renders the mixdown, in its default format.
            result.pop("output_files")
    algorithms = result.get("algorithms")
    if multitrack and isinstance(algorithms, dict):
        for key in _CONSUMED_BY_MULTITRACK:
            algorithms.pop(key, None)
    if joined:
        result.pop("video", None)
    return result


# Preparation


def prepare(
    main: Path | None,
    inputs: list[InputSpec],
    params: dict[str, Any],
    workdir: Path,
    *,
    progress: ProgressCallback | None = None,
    tracks: bool | None = None,
) -> Prepared:
    """Render the production's inputs into one intermediate file in workdir.

    main is the main input (None for multitrack). tracks: write each processed track to its own
    file (default: when params asks for a "tracks" output). progress(fraction, stage) gets 0..1
    with stage "analysing" or "mixing"; returning False cancels (EngineCancelled).
    """
    workdir = Path(workdir)
    flag_errors: dict[str, str] = {}
    raw_multitrack = params.get("is_multitrack")
    is_multitrack = (
        None if raw_multitrack is None else as_flag(raw_multitrack, "is_multitrack", flag_errors)
    )
    if flag_errors:
        raise ParamsError(flag_errors)
    entries = validate_multi_inputs(
        [
            {"type": s.type, "id": s.id, "algorithms": s.algorithms, "offset": s.offset}
            for s in inputs
        ],
        is_multitrack=is_multitrack,
    )
    specs = [
        dataclasses.replace(
            spec, id=entry["id"], algorithms=entry["algorithms"], offset=entry["offset"]
        )
        for spec, entry in zip(inputs, entries, strict=True)
    ]
    intro = next((s for s in specs if s.type == "intro"), None)
    outro = next((s for s in specs if s.type == "outro"), None)
    track_specs = [s for s in specs if s.type == "multitrack"]
    multitrack = bool(track_specs)
    joined = intro is not None or outro is not None
    formats = track_formats(params)
    keep_tracks = bool(formats) if tracks is None else tracks
    ready_params = process_params(params, multitrack=multitrack, joined=joined)

    if multitrack and main is not None:
        raise ParamsError(
            {"input_file": "a multitrack production takes its audio from its tracks only"}
        )
    if not multitrack and main is None:
        message = "an intro or outro needs a main input to join" if joined else "no input given"
        raise ParamsError({"input_file": message})
    if not specs:
        assert main is not None
        info = _probe(main, "the input")
        return Prepared(Path(main), info.duration, {}, [], ready_params, formats)

    reporter = Reporter(progress)
    reporter(0.0, "analysing")
    workdir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    statistics: dict[str, Any] = {"mode": "multitrack" if multitrack else "intro_outro"}
    track_files: list[Path] = []
    try:
        if multitrack:
            mix_share = 0.75 if joined else 1.0
            mixdown = workdir / ("mixdown.wav" if joined else "prepared.wav")
            created.append(mixdown)
            mixed, track_files = _mixdown(
                track_specs, _top_algorithms(params), mixdown, workdir, keep_tracks,
                reporter, (0.0, mix_share), created,
            )  # fmt: skip
            statistics.update(mixed)
            main_path, result_path = mixdown, mixdown
        else:
            assert main is not None
            main_path = Path(main)
            result_path = workdir / "prepared.wav"
        if joined:
            result_path = workdir / "prepared.wav"
            created.append(result_path)
            start = 0.75 if multitrack else 0.0
            statistics["segments"] = _join(
                main_path, intro, outro, _trim(params), result_path,
                reporter, (start, 1.0), main_label="mixdown" if multitrack else "main",
            )  # fmt: skip
            if multitrack:
                main_path.unlink(missing_ok=True)
        reporter(1.0, "mixing")
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    info = probe(result_path)
    statistics.update(
        duration=round(info.duration, 3), sample_rate=info.sample_rate, channels=info.channels
    )
    return Prepared(result_path, info.duration, statistics, track_files, ready_params, formats)


def _top_algorithms(params: dict[str, Any]) -> dict[str, Any]:
    """Return the top-level algorithms that set the tracks' defaults."""
    section = params.get("algorithms") or {}
    if not isinstance(section, dict):
        raise ParamsError({"algorithms": "must be an object"})
    errors: dict[str, str] = {}
    result = {}
    for key in _FLAG_ALGORITHMS:
        raw = section.get(key, section.get("hipfilter")) if key == "filtering" else section.get(key)
        result[key] = False if raw is None else as_flag(raw, f"algorithms.{key}", errors)
    result["denoiseamount"] = as_number(
        section.get("denoiseamount"), "algorithms.denoiseamount", errors
    )
    if errors:
        raise ParamsError(errors)
    return result


def _trim(params: dict[str, Any]) -> tuple[float, float | None]:
    """Return the trim window (start, duration) of params["video"], applied to the main."""
    video = params.get("video") or {}
    errors: dict[str, str] = {}
    start = as_number(video.get("start_time"), "video.start_time", errors) or 0.0
    duration = as_number(video.get("duration"), "video.duration", errors)
    if start < 0:
        errors["video.start_time"] = "must be zero or more seconds"
    if duration is not None and duration <= 0:
        errors["video.duration"] = "must be more than zero seconds"
    if errors:
        raise ParamsError(errors)
    return start, duration


def _probe(path: Path, label: str) -> ProbeResult:
    """Probe an input and insist on audio, naming it by its role in messages."""
    try:
        info = probe(path)
    except EngineError as exc:
        raise EngineError(f"{label[:1].upper()}{label[1:]}: {exc}") from exc
    if not info.has_audio:
        raise EngineError(f"{label[:1].upper()}{label[1:]} has no audio stream.")
    return info


def _layout(channels: int | None) -> str:
    """Return the working channel layout: mono stays mono, anything else becomes stereo."""
    return "mono" if channels == 1 else "stereo"


# Intro and outro


def _join(
    main: Path,
    intro: InputSpec | None,
    outro: InputSpec | None,
    trim: tuple[float, float | None],
    out: Path,
    reporter: Reporter,
    share: tuple[float, float],
    *,
    main_label: str,
) -> list[dict[str, Any]]:
    """Loudness-match intro and outro to the main and join the three into out."""
    main_info = _probe(main, f"the {main_label}")
    rate = main_info.sample_rate or 48000
    layout = _layout(main_info.channels)
    start, length = trim
    if main_info.duration and start >= main_info.duration:
        raise EngineError(
            f"start_time {start:g}s is beyond the end of the input ({main_info.duration:.1f}s)."
        )
    main_span = max(0.0, main_info.duration - start)
    if length is not None:
        main_span = min(main_span, length)

    pieces: list[_Piece] = []
    if intro is not None:
        info = _probe(intro.path, "the intro")
        reading = input_args(intro.path, format_name=info.format_name)
        pieces.append(_Piece("intro", intro.id, reading, info.duration))
    reading = input_args(main, format_name=main_info.format_name, start=start, duration=length)
    pieces.append(_Piece(main_label, "", reading, main_span))
    if outro is not None:
        info = _probe(outro.path, "the outro")
        reading = input_args(outro.path, format_name=info.format_name)
        pieces.append(_Piece("outro", outro.id, reading, info.duration))

    overlaps = {"intro": intro.offset if intro else 0.0, "outro": outro.offset if outro else 0.0}
    for kind, overlap in overlaps.items():
        other = next(p.span for p in pieces if p.kind == kind) if overlap else 0.0
        if overlap and overlap > min(other, main_span):
            raise ParamsError(
                {f"{kind}.offset": f"an overlap of {overlap:g}s is longer than the {kind} "
                 f"({other:.1f}s) or the main audio ({main_span:.1f}s)"}
            )  # fmt: skip

    convert = f"aformat=sample_fmts=dbl:sample_rates={rate}:channel_layouts={layout}"
    # Pass 1: measure every piece as it will be joined (rate, layout, trim).
    low, high = share
    total = sum(p.span for p in pieces)
    args: list[str] = []
    graph: list[str] = []
    for k, piece in enumerate(pieces):
        args += piece.input_args
        graph.append(
            f"[{k}:a:0]{convert},{DENORMAL_GUARD},ebur128@p{k}=peak=true:framelog=quiet[m{k}]"
        )
    args += ["-filter_complex", ";".join(graph)]
    for k in range(len(pieces)):
        args += ["-map", f"[m{k}]"]
    args += ["-f", "null", "-"]
    middle = low + (high - low) * 0.35
    lines = run_checked(
        args, main, duration=total, on_progress=reporter.span(low, middle, "analysing")
    )
    measured = parse_summaries(lines)
    loudness = [measured.get(f"p{k}") for k in range(len(pieces))]
    if any(value is None for value in loudness):
        raise EngineError("The loudness of the intro, main or outro could not be measured.")
    reference = loudness[[p.kind for p in pieces].index(main_label)]
    assert reference is not None

    segments: list[dict[str, Any]] = []
    gains: list[float] = []
    for piece, value in zip(pieces, loudness, strict=True):
        assert value is not None
        gain = 0.0
        if piece.kind != main_label and not value.is_silent and not reference.is_silent:
            gain = max(
                -MAX_MATCH_GAIN, min(MAX_MATCH_GAIN, reference.integrated - value.integrated)
            )
        gain = round(gain, 2)
        gains.append(gain)
        after = Loudness(value.integrated + gain, value.lra, value.true_peak + gain)
        segment: dict[str, Any] = {
            "type": piece.kind,
            "duration": round(piece.span, 3),
            "before": value.as_dict(),
            "gain": gain,
            "after": (after if not value.is_silent else value).as_dict(),
        }
        if piece.id:
            segment["id"] = piece.id
        segments.append(segment)

    # Pass 2: gain, join, write the float intermediate.
    args, graph = [], []
    for k, piece in enumerate(pieces):
        args += piece.input_args
        chain = [convert, "asetpts=N/SR/TB"]
        if gains[k]:
            chain.append(f"volume={gains[k]:.2f}dB:precision=double")
        graph.append(f"[{k}:a:0]{','.join(chain)}[s{k}]")
    current = "s0"
    for k in range(1, len(pieces)):
        kind = pieces[k].kind if pieces[k].kind == "outro" else pieces[k - 1].kind
        overlap = overlaps.get(kind, 0.0)
        # Equal-power curves for an overlap: the overlapping stretch keeps its loudness.
        crossfade = f"acrossfade=d={overlap:.6f}:c1=qsin:c2=qsin"
        join = crossfade if overlap else "concat=n=2:v=0:a=1"
        graph.append(f"[{current}][s{k}]{join}[j{k}]")
        current = f"j{k}"
    args += ["-filter_complex", ";".join(graph)]
    args += ["-map", f"[{current}]", "-map_metadata", "-1", *_INTERMEDIATE_CODEC]
    args += ["-y", file_url(out)]
    joined_length = total - overlaps["intro"] - overlaps["outro"]
    run_checked(
        args, main, duration=joined_length, on_progress=reporter.span(middle, high, "mixing")
    )
    return segments


# Multitrack


def _mixdown(
    specs: list[InputSpec],
    defaults: dict[str, Any],
    out: Path,
    workdir: Path,
    keep_tracks: bool,
    reporter: Reporter,
    share: tuple[float, float],
    created: list[Path],
) -> tuple[dict[str, Any], list[Path]]:
    """Process every track and mix them into out; return the statistics and track files."""
    tracks = [_track(k, spec, defaults) for k, spec in enumerate(specs)]
    rate = max(t.info.sample_rate or 48000 for t in tracks)
    layout = "stereo" if any((t.info.channels or 2) > 1 for t in tracks) else "mono"
    length = max(t.spec.offset + t.info.duration for t in tracks)
    samples = round(length * rate)
    low, high = share
    middle = low + (high - low) * 0.3

    _analyse(tracks, workdir, reporter.span(low, middle, "analysing"))
    _plan_levels(tracks)
    duck = _plan_ducking(tracks)

    if keep_tracks:
        folder = workdir / "tracks"
        folder.mkdir(exist_ok=True)
        used: set[str] = set()
        for track in tracks:
            track.output = folder / f"{_file_stem(track, used)}.wav"
            created.append(track.output)

    graph = _mix_graph(tracks, rate, layout, samples, duck)
    args: list[str] = []
    for track in tracks:
        args += input_args(track.spec.path, format_name=track.info.format_name)
    args += ["-filter_complex", ";".join(graph)]
    args += ["-map", "[mixout]", "-map_metadata", "-1", *_INTERMEDIATE_CODEC, "-y", file_url(out)]
    for track in tracks:
        if track.output is not None:
            args += ["-map", f"[out{track.index}]", "-map_metadata", "-1", *_INTERMEDIATE_CODEC]
            args += ["-y", file_url(track.output)]
    lines = run_checked(
        args, tracks[0].spec.path, duration=length,
        on_progress=reporter.span(middle, high, "mixing"),
    )  # fmt: skip
    measured = parse_summaries(lines)
    for track in tracks:
        track.after = measured.get(f"a{track.index}")
    mix = measured.get("mix")

    statistics = {
        "tracks": [_track_statistics(t) for t in tracks],
        "mixdown": mix.as_dict() if mix else None,
        "ducking": duck,
    }
    return statistics, [t.output for t in tracks if t.output is not None]


def _track(index: int, spec: InputSpec, defaults: dict[str, Any]) -> _Track:
    """Return a track with its settings resolved (its own, else the production's)."""
    algorithms = spec.algorithms
    info = _probe(spec.path, f"track {spec.id!r}")
    role = algorithms.get("backforeground", "auto")
    if role == "auto":
        words = re.findall(r"[a-z]+", spec.id.lower())
        is_music = any(word.startswith(BACKGROUND_WORDS) for word in words)
        role = "background" if is_music else "foreground"
    speech = role == "foreground"

    def setting(key: str) -> bool:
        value = algorithms.get(key)
        return bool(defaults[key] if value is None else value)

    amount = algorithms.get("denoiseamount", defaults.get("denoiseamount")) or 0.0
    return _Track(
        index=index,
        spec=spec,
        info=info,
        role=role,
        filtering=setting("filtering"),
        denoise=setting("denoise"),
        denoise_amount=float(amount),
        leveler=setting("leveler"),
        # Music is never gated: its quiet passages are part of it.
        gate=speech and setting("gate"),
        crossgate=speech and setting("crossgate"),
    )


def _analyse(tracks: list[_Track], workdir: Path, on_progress: Callable[[float], None]) -> None:
    """Measure every track in one ffmpeg run: loudness, noise floor and speech level."""
    args: list[str] = []
    graph: list[str] = []
    logs: list[Path] = []
    for track in tracks:
        k = track.index
        args += input_args(track.spec.path, format_name=track.info.format_name)
        log = workdir / f"levels-{k}.txt"
        logs.append(log)
        window = max(1, round((track.info.sample_rate or 48000) * WINDOW_SECONDS))
        branch = [f"highpass=f={HIGHPASS_HZ}"] if track.filtering else []
        branch += [
            f"asetnsamples=n={window}:p=0",
            "astats=metadata=1:reset=1:measure_perchannel=none:measure_overall=RMS_level",
            "ametadata=mode=print:key=lavfi.astats.Overall.RMS_level:file="
            + _escape_value(file_url(log)),
        ]
        graph += [
            f"[{k}:a:0]aformat=sample_fmts=dbl,asplit=2[r{k}][w{k}]",
            f"[r{k}]{DENORMAL_GUARD},ebur128@t{k}=peak=true:framelog=quiet[x{k}]",
            f"[w{k}]{','.join(branch)}[y{k}]",
        ]
    args += ["-filter_complex", ";".join(graph)]
    for track in tracks:
        args += ["-map", f"[x{track.index}]", "-map", f"[y{track.index}]"]
    args += ["-f", "null", "-"]
    longest = max(t.info.duration for t in tracks)
    try:
        lines = run_checked(args, tracks[0].spec.path, duration=longest, on_progress=on_progress)
        measured = parse_summaries(lines)
        for track, log in zip(tracks, logs, strict=True):
            track.before = measured.get(f"t{track.index}")
            levels = sorted(_read_levels(log))
            if levels:
                track.floor = _percentile(levels, FLOOR_PERCENTILE)
                track.active = _percentile(levels, ACTIVE_PERCENTILE)
    finally:
        for log in logs:
            log.unlink(missing_ok=True)


def _read_levels(path: Path) -> Iterable[float]:
    """Yield the window RMS levels (dBFS) ametadata printed, skipping digital silence."""
    if not path.exists():
        return
    with path.open(encoding="ascii", errors="replace") as handle:
        for line in handle:
            key, _, value = line.strip().partition("=")
            if not key.endswith("RMS_level"):
                continue
            try:
                level = float(value)
            except ValueError:
                continue
            if math.isfinite(level) and level > DIGITAL_SILENCE_DB:
                yield level


def _percentile(ordered: list[float], percent: float) -> float:
    """Return the nearest-rank percentile of an ascending list."""
    rank = max(0, min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1))
    return ordered[rank]


def _plan_levels(tracks: list[_Track]) -> None:
    """Set leveler gains and gate thresholds from the analysis."""
    speech = [
        t.before.integrated
        for t in tracks
        if t.role == "foreground" and t.before is not None and not t.before.is_silent
    ]
    # Leveled tracks meet at the speakers' average loudness (music included: in the pauses it
    # stands at speech level, under speech it is ducked).
    reference = sum(speech) / len(speech) if speech else None
    for track in tracks:
        before = track.before
        if track.leveler and reference is not None and before and not before.is_silent:
            gain = reference - before.integrated
            track.gain = round(max(-MAX_LEVELER_GAIN, min(MAX_LEVELER_GAIN, gain)), 2)
        if not track.gate:
            continue
        if track.floor is None or track.active is None:
            track.gate_skipped = "no noise to gate"
            continue
        snr = track.active - track.floor
        if snr < GATE_MIN_SNR:
            track.gate_skipped = f"speech only {snr:.0f} dB over the noise floor"
            continue
        track.gate_threshold = track.floor + min(GATE_ABOVE_FLOOR, snr / 2) + track.gain


def _plan_ducking(tracks: list[_Track]) -> dict[str, float] | None:
    """Return the sidechaincompress settings that duck background under foreground tracks."""
    speech = [t for t in tracks if t.role == "foreground"]
    if not speech or not any(t.role == "background" for t in tracks):
        return None
    levels = [t.active + t.gain for t in speech if t.active is not None]
    if not levels:
        return None
    # Talkers take turns: the sum speaks about as loud as its loudest talker.
    key_level = max(levels)
    scale_db = max(-36.0, min(36.0, DUCK_KEY_LEVEL - key_level))
    noise = 0.0
    for track in speech:
        if track.floor is not None:
            floor = track.floor + track.gain
            if track.gate_threshold is not None:
                floor += GATE_RANGE_DB
            noise += 10 ** (floor / 10)
    threshold = DUCK_KEY_LEVEL - DUCK_HEADROOM
    if noise:
        threshold = max(threshold, 10 * math.log10(noise) + scale_db + DUCK_OVER_NOISE)
    threshold = min(threshold, DUCK_KEY_LEVEL - 1.0)
    # Gain reduction at the speech level is (level - threshold) * (1 - 1/ratio) = DUCK_DB.
    over = DUCK_KEY_LEVEL - threshold
    ratio = 20.0 if over <= DUCK_DB else min(20.0, 1 / (1 - DUCK_DB / over))
    return {
        "threshold": round(threshold, 2),
        "ratio": round(ratio, 3),
        "key_gain": round(scale_db, 2),
        "depth": DUCK_DB,
    }


def _mix_graph(
    tracks: list[_Track], rate: int, layout: str, samples: int, duck: dict[str, float] | None
) -> list[str]:
    """Return the filtergraph that processes every track and mixes them."""
    graph: list[str] = []
    labels: dict[int, str] = {}
    for track in tracks:
        k = track.index
        chain = ["aformat=sample_fmts=dbl", "asetpts=N/SR/TB"]
        if (track.info.sample_rate or rate) != rate:
            chain.append(f"aresample={rate}")
        chain.append(f"aformat=sample_fmts=dbl:channel_layouts={layout}")
        if track.filtering:
            chain.append(f"highpass=f={HIGHPASS_HZ}")
        if track.denoise:
            floor = -50.0 if track.floor is None else max(-80.0, min(-20.0, track.floor))
            amount = min(97.0, track.denoise_amount) if track.denoise_amount else 12.0
            chain.append(f"afftdn=nr={amount:g}:nf={floor:.1f}:tn=1")
        if track.gain:
            chain.append(f"volume={track.gain:.2f}dB:precision=double")
        delay = round(track.spec.offset * rate)
        if delay:
            chain.append(f"adelay=delays={delay}S:all=1")
        # Same length for every track: the sidechain filters stop at their shorter input.
        chain.append(f"apad=whole_len={samples}")
        graph.append(f"[{k}:a:0]{','.join(chain)}[p{k}]")
        labels[k] = f"p{k}"

    speech = [t for t in tracks if t.role == "foreground"]
    crossgated = [t for t in speech if t.crossgate] if len(speech) >= 2 else []
    if crossgated:
        graph += _crossgate_graph(speech, crossgated, labels, rate)

    for track in speech:
        k = track.index
        if track.gate_threshold is not None:
            threshold = 10 ** (min(track.gate_threshold, -1.0) / 20)
            gate = (
                f"agate=threshold={threshold:.8f}:range={10 ** (GATE_RANGE_DB / 20):.6f}"
                f":ratio={GATE_RATIO:g}:attack=10:release=250:detection=rms"
            )
            graph.append(f"[{labels[k]}]{gate}[g{k}]")
            labels[k] = f"g{k}"
        if track in crossgated:
            gate = (
                f"sidechaingate=threshold=0.5:range={10 ** (CROSSGATE_RANGE_DB / 20):.6f}"
                ":ratio=9000:attack=5:release=400:knee=1:detection=peak"
            )
            graph.append(f"[{labels[k]}][key{k}]{gate}[c{k}]")
            labels[k] = f"c{k}"

    background = [t for t in tracks if t.role == "background"]
    if duck is not None and background:
        keys = []
        for track in speech:
            k = track.index
            graph.append(f"[{labels[k]}]asplit=2[f{k}][fk{k}]")
            labels[k] = f"f{k}"
            keys.append(f"[fk{k}]")
        count = len(background)
        outs = "".join(f"[ks{b.index}]" for b in background)
        mix = f"amix=inputs={len(keys)}:normalize=0:duration=longest," if len(keys) > 1 else ""
        # Padding the key forever: the music ends where its own (padded) stream ends.
        graph.append(f"{''.join(keys)}{mix}apad,asplit={count}{outs}")
        compress = (
            f"sidechaincompress=threshold={10 ** (duck['threshold'] / 20):.8f}"
            f":ratio={duck['ratio']:g}:attack={DUCK_ATTACK_MS}:release={DUCK_RELEASE_MS}"
            f":level_sc={10 ** (duck['key_gain'] / 20):.6f}:detection=rms"
        )
        for track in background:
            k = track.index
            graph.append(f"[{labels[k]}][ks{k}]{compress}[d{k}]")
            labels[k] = f"d{k}"

    mix_inputs = []
    for track in tracks:
        k = track.index
        measure = f"{DENORMAL_GUARD},ebur128@a{k}=peak=true:framelog=quiet"
        if track.output is not None:
            graph.append(f"[{labels[k]}]{measure},asplit=2[mix{k}][out{k}]")
        else:
            graph.append(f"[{labels[k]}]{measure}[mix{k}]")
        mix_inputs.append(f"[mix{k}]")
    # normalize=0: the mixdown is the plain sum; process() normalises it afterwards.
    graph.append(
        f"{''.join(mix_inputs)}amix=inputs={len(tracks)}:normalize=0:duration=longest"
        f":dropout_transition=0,{DENORMAL_GUARD},ebur128@mix=peak=true:framelog=quiet[mixout]"
    )
    return graph


def _crossgate_graph(
    speech: list[_Track], crossgated: list[_Track], labels: dict[int, str], rate: int
) -> list[str]:
    """Return the filters that give each crossgated track a key: 1 = it speaks, 0 = bleed.

    Every speech track's power envelope (square via amultiply, one-pole low-pass, resampled to
    1 kHz) goes into one multichannel stream; aeval compares, sample by sample, each track's
    envelope with the loudest other's. A track that another outshouts by CROSSGATE_MARGIN_DB
    only carries that speaker's bleed: its key drops to 0 and its sidechaingate closes. When
    both talk at once neither is outshouted, so neither is cut; when nobody talks the gate stays
    open (the noise gate handles room tone).
    """
    graph = []
    for track in speech:
        k = track.index
        graph.append(f"[{labels[k]}]asplit=2[q{k}][e{k}]")
        labels[k] = f"q{k}"
        graph.append(
            f"[e{k}]aformat=sample_fmts=dbl:channel_layouts=mono,asplit=2[e{k}a][e{k}b];"
            f"[e{k}a][e{k}b]amultiply,lowpass=f={ENVELOPE_HZ}:p=1,"
            # amerge needs every input's layout fixed before it negotiates its own.
            f"aresample={ENVELOPE_RATE},aformat=channel_layouts=mono[v{k}]"
        )
    margin = 10 ** (CROSSGATE_MARGIN_DB / 10)
    exprs = []
    for track in crossgated:
        own = speech.index(track)
        others = [f"val({j})" for j in range(len(speech)) if j != own]
        loudest = others[0]
        for other in others[1:]:
            loudest = f"max({loudest},{other})"
        exprs.append(f"max(gte(val({own})*{margin:.4f},{loudest}),lt({loudest},{ENVELOPE_QUIET}))")
    envelopes = "".join(f"[v{t.index}]" for t in speech)
    outs = "".join(f"[m{t.index}]" for t in crossgated)
    # Quoted: the expressions' commas must not split the filter chain.
    graph.append(
        f"{envelopes}amerge=inputs={len(speech)},aeval=exprs='{'|'.join(exprs)}',"
        f"asplit={len(crossgated)}{outs}"
    )
    for j, track in enumerate(crossgated):
        k = track.index
        # Padded: the resampled key can end a few samples early, which would cut the track.
        graph.append(f"[m{k}]pan=mono|c0=c{j},aresample={rate},apad[key{k}]")
    return graph


def _track_statistics(track: _Track) -> dict[str, Any]:
    """Return what was done to one track and its loudness before and after."""
    stats: dict[str, Any] = {
        "id": track.spec.id,
        "role": track.role,
        "offset": track.spec.offset,
        "duration": round(track.info.duration, 3),
        "sample_rate": track.info.sample_rate,
        "channels": track.info.channels,
        "before": track.before.as_dict() if track.before else None,
        "after": track.after.as_dict() if track.after else None,
        "noise_floor": None if track.floor is None else round(track.floor, 1),
        "speech_level": None if track.active is None else round(track.active, 1),
        "filtering": track.filtering,
        "denoise": track.denoise,
        "leveler_gain": track.gain,
        "gate": track.gate_threshold is not None,
        "crossgate": track.crossgate,
    }
    if track.gate_threshold is not None:
        stats["gate_threshold"] = round(track.gate_threshold, 1)
    if track.gate_skipped:
        stats["gate_skipped"] = track.gate_skipped
    return stats


def _file_stem(track: _Track, used: set[str]) -> str:
    """Return a unique, safe file name stem for a track's file (its id, readable)."""
    stem = re.sub(r"[^\w .()-]+", "_", track.spec.id).strip(" .") or f"track{track.index + 1}"
    stem = stem[:80]
    candidate, n = stem, 2
    while candidate.lower() in used:
        candidate, n = f"{stem}-{n}", n + 1
    used.add(candidate.lower())
    return candidate


def _escape_value(text: str) -> str:
    """Escape a filter option value for a -filter_complex graph (both escaping levels)."""
    value = re.sub(r"([\\':])", r"\\\1", text)
    return re.sub(r"([\\'\[\],;])", r"\\\1", value)


# Track outputs


def zip_tracks(
    processed_tracks: list[Path],
    dest: Path,
    fmt: str,
    *,
    gain_db: float = 0.0,
    progress: ProgressCallback | None = None,
) -> Path:
    """Encode the processed tracks as wav or flac and store them in the zip dest.

    gain_db: the gain process() gave the mixdown (statistics["gain"]), so the tracks sum to
    the master's level; a -1 dBFS limiter keeps the 16-bit files from clipping.
    """
    fmt = fmt.lower().removesuffix(".zip")
    if fmt not in TRACK_FORMATS:
        raise ParamsError({"format": f"tracks come as wav or flac, got {fmt!r}"})
    if not processed_tracks:
        raise EngineError("There are no processed tracks to pack.")
    spec = FORMATS[fmt]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(progress)
    reporter(0.0, "encoding")

    names: list[str] = []
    used: set[str] = set()
    for path in processed_tracks:
        stem, n = Path(path).stem, 2
        name = f"{stem}.{spec.extension}"
        while name.lower() in used:
            name, n = f"{stem}-{n}.{spec.extension}", n + 1
        used.add(name.lower())
        names.append(name)
    staging = [dest.parent / f".{dest.name}.{k}.{spec.extension}" for k in range(len(names))]
    partial = dest.parent / f".{dest.name}.part"

    chain = []
    if gain_db:
        chain.append(f"volume={gain_db:.2f}dB:precision=double")
    chain.append("alimiter=limit=0.891251:level=0:latency=1")
    args: list[str] = []
    graph: list[str] = []
    longest = 0.0
    for k, path in enumerate(processed_tracks):
        info = _probe(Path(path), f"track file {Path(path).name}")
        args += input_args(Path(path), format_name=info.format_name)
        graph.append(f"[{k}:a:0]aformat=sample_fmts=dbl,{','.join(chain)}[t{k}]")
        longest = max(longest, info.duration)
    args += ["-filter_complex", ";".join(graph)]
    for k, target in enumerate(staging):
        args += ["-map", f"[t{k}]", "-map_metadata", "-1", *spec.encoder_args(None)]
        args += ["-y", file_url(target)]
    try:
        run_checked(
            args, Path(processed_tracks[0]), duration=longest,
            on_progress=reporter.span(0.0, 0.9, "encoding"),
        )  # fmt: skip
        # Stored, not deflated: PCM barely shrinks and FLAC not at all. ZipFile.write copies
        # each file in chunks, so no track is ever held in memory whole.
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, target in zip(names, staging, strict=True):
                zf.write(target, arcname=name)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
        for target in staging:
            target.unlink(missing_ok=True)
    reporter(1.0, "encoding")
    return dest
