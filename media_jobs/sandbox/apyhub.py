"""Emulator of ApyHub's Extract Audio from Video Job API: submit a video, poll, fetch the link.

Follows seeds/apyhub-extract-audio-job-api.txt and providers.md ("ApyHub"): `apy-token` auth
(401 `{"error": {"code": 401, "message": "Unauthorized"}}`), the multipart submit with `video`
(mp4, webm, flv, avi, mkv, mov, 3gp; extension and content checked), `start_time` / `duration`
strings (duration defaults to 2 s, as documented), `output_format` from the documented list, the
`persistent` query, and 400 for corrupt or unsupported input. Unconfirmed upstream and chosen
here: the URL variant takes JSON `{"url", "start_time", "duration", "output_format"}`; the status
answer is `{"job_id", "status", "data"}` moving pending -> in-progress -> completed (or failed with
`error`), with the result link under `data`. That link lives on the emulator's "storage host"
(the same loopback server under its other name, so it is another origin than the API, as a real
storage link is) and expires 15 minutes after the job ends unless `persistent=true`.

Extraction is real: the built-in engine renders mp3, wav, aac, ogg and flac; wma, ac3 and amr,
which the engine does not write, come from plain ffmpeg with the same trim window.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.http import FileResponse, HttpRequest, JsonResponse
from django.urls import path

from media_jobs import engine, netsafe
from media_jobs.engine.ffmpeg import file_url
from media_jobs.sandbox.base import Emulator, in_background, sandbox_view

KIND = "apyhub"
VIDEO_EXTENSIONS = ("mp4", "webm", "flv", "avi", "mkv", "mov", "3gp")
# FFmpeg demuxer names each documented extension may carry (the content must agree with it).
VIDEO_DEMUXERS = {
    "mp4": {"mov", "mp4"},
    "mov": {"mov", "mp4"},
    "3gp": {"mov", "mp4", "3gp"},
    "webm": {"matroska", "webm"},
    "mkv": {"matroska", "webm"},
    "flv": {"flv"},
    "avi": {"avi"},
}
OUTPUT_FORMATS = ("mp3", "wav", "aac", "ogg", "flac", "wma", "ac3", "amr")
DEFAULT_DURATION = "2"  # seed: "The default is 2 seconds"
LINK_SECONDS = 15 * 60  # seed: "If false, the URL expires after 15 minutes"
MAX_FETCH_BYTES = 2 * 1024**3
# A stage the docs never name (unknown_status knob).
UNDOCUMENTED_STATUS = "uploading-result"
# Plain-ffmpeg encodings for the formats the built-in engine does not write:
# (ffmpeg output options, result extension).
FFMPEG_FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "wma": (("-c:a", "wmav2", "-b:a", "128k", "-f", "asf"), "wma"),
    "ac3": (("-c:a", "ac3", "-b:a", "192k", "-f", "ac3"), "ac3"),
    # AMR-NB is 8 kHz mono speech at fixed rates; 12.2 kbit/s is its best.
    "amr": (
        ("-c:a", "libopencore_amrnb", "-ar", "8000", "-ac", "1", "-b:a", "12.2k", "-f", "amr"),
        "amr",
    ),
}


def engine_format(fmt: str) -> str | None:
    """Return the built-in engine's format for an ApyHub output format (None: use ffmpeg)."""
    if fmt == "ogg":
        # Ogg Vorbis where the engine writes it, else Opus, which also lives in an Ogg file.
        return "vorbis" if "vorbis" in engine.FORMATS else "opus"
    return fmt if fmt in ("mp3", "wav", "aac", "flac") else None


def fail(status: int, message: str) -> JsonResponse:
    """Return an error the way ApyHub shapes them."""
    return JsonResponse({"error": {"code": status, "message": message}}, status=status)


def token_of(request: HttpRequest, emu: Emulator) -> str | None:
    """Return the caller's apy-token, or None when missing, refused or expired."""
    token = request.headers.get("apy-token", "").strip()
    if not token or token.startswith("bad") or emu.knobs.expire_tokens:
        return None
    return token


def extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower().lstrip(".")


def number(value: Any, name: str) -> float | JsonResponse:
    """Return a non-negative number of seconds from a field (a string, or a JSON number)."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return fail(400, f"{name} must be a number of seconds, not {str(value)[:40]!r}")
    if not seconds >= 0 or seconds == float("inf"):
        return fail(400, f"{name} must be zero or more seconds")
    return seconds


def options(request: HttpRequest, fields: dict[str, Any]) -> dict[str, Any] | JsonResponse:
    """Return the validated job options of a submit, or the 400 that refuses them."""
    persistent = request.GET.get("persistent", "false").strip().lower()
    if persistent not in ("true", "false"):
        return fail(400, "persistent must be true or false")
    start = number(fields.get("start_time", "0") or "0", "start_time")
    if isinstance(start, JsonResponse):
        return start
    duration = number(fields.get("duration", DEFAULT_DURATION) or DEFAULT_DURATION, "duration")
    if isinstance(duration, JsonResponse):
        return duration
    if duration == 0:
        return fail(400, "duration must be more than zero seconds")
    fmt = str(fields.get("output_format") or "mp3").strip().lower()
    if fmt not in OUTPUT_FORMATS:
        return fail(400, f"output_format must be one of {', '.join(OUTPUT_FORMATS)}")
    return {
        "start_time": start,
        "duration": duration,
        "output_format": fmt,
        "persistent": persistent == "true",
    }


def refuse_name(name: str) -> JsonResponse | None:
    """Return the 400 for a video name whose extension ApyHub does not take."""
    ext = extension(name)
    if ext in VIDEO_EXTENSIONS:
        return None
    shown = f".{ext}" if ext else "a file without an extension"
    return fail(
        400,
        f"Invalid input: {shown} is not a supported video format ({', '.join(VIDEO_EXTENSIONS)})",
    )


def check_video(video: Path, opts: dict[str, Any]) -> JsonResponse | None:
    """Return the 400 for a corrupt video, one whose content is not its extension, or no audio."""
    try:
        facts = engine.probe(video)
    except engine.EngineError:
        return fail(400, "Invalid input: the provided file is corrupt")
    names = set(facts.format_name.split(","))
    if not facts.has_video or not names & VIDEO_DEMUXERS[extension(video.name)]:
        return fail(
            400, f"Invalid input: the provided file is not a .{extension(video.name)} video"
        )
    if not facts.has_audio:
        return fail(400, "Invalid input: the video has no audio track")
    if facts.duration and opts["start_time"] >= facts.duration:
        return fail(400, f"start_time is beyond the end of the video ({facts.duration:.1f}s)")
    return None


@sandbox_view(KIND)
def submit_file(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """POST /job/extract/video/audio/file?persistent=: multipart `video` plus options."""
    if request.method != "POST":
        return fail(405, "Method not allowed")
    owner = token_of(request, emu)
    if owner is None:
        return fail(401, "Unauthorized")
    if request.content_type != "multipart/form-data":
        return fail(400, "Send multipart/form-data with a video file")
    upload = request.FILES.get("video")
    if upload is None:
        return fail(400, "Missing required field: video")
    if refused := refuse_name(upload.name or ""):
        return refused
    opts = options(request, request.POST)
    if isinstance(opts, JsonResponse):
        return opts
    job_id = str(uuid.uuid4())
    video = emu.job_dir(job_id) / f"video.{extension(upload.name)}"
    with video.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return accept(request, emu, job_id, owner, video, Path(upload.name).stem, opts)


@sandbox_view(KIND)
def submit_url(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """POST /job/extract/video/audio/url?persistent=: JSON {"url", ...options} (unconfirmed)."""
    if request.method != "POST":
        return fail(405, "Method not allowed")
    owner = token_of(request, emu)
    if owner is None:
        return fail(401, "Unauthorized")
    if request.content_type != "application/json":
        return fail(400, "Send application/json with the video's url")
    try:
        body = json.loads(request.body or b"")
    except ValueError:
        return fail(400, "Invalid JSON body")
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        return fail(400, "Missing required field: url")
    url = body["url"].strip()
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return fail(400, "url must be an https:// URL")
    if refused := refuse_name(parts.path):
        return refused
    opts = options(request, body)
    if isinstance(opts, JsonResponse):
        return opts
    job_id = str(uuid.uuid4())
    video = emu.job_dir(job_id) / f"video.{extension(parts.path)}"
    try:
        with video.open("wb") as out:
            netsafe.fetch_to_file(url, out, max_bytes=MAX_FETCH_BYTES)
    except netsafe.FetchError as exc:
        shutil.rmtree(video.parent, ignore_errors=True)
        return fail(400, f"Invalid input: the video could not be fetched ({exc.reason})")
    return accept(request, emu, job_id, owner, video, PurePosixPath(parts.path).stem, opts)


def accept(
    request: HttpRequest,
    emu: Emulator,
    job_id: str,
    owner: str,
    video: Path,
    stem: str,
    opts: dict[str, Any],
) -> JsonResponse:
    """Check the stored video, record the job and start extracting; answer with its job_id."""
    if refused := check_video(video, opts):
        shutil.rmtree(video.parent, ignore_errors=True)
        return refused
    with emu.lock:
        emu.jobs[job_id] = {
            "job_id": job_id,
            "owner": owner,
            "status": "pending",
            "video": str(video),
            # Link-safe: the name travels in the result URL unquoted.
            "stem": re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "audio",
            **opts,
            "storage": storage_base(request),
            "token": None,
            "filename": None,
            "completed_at": None,
            "error": None,
        }
    in_background(lambda: extract(emu, job_id), f"{KIND}-{job_id}")
    return JsonResponse({"job_id": job_id})


def storage_base(request: HttpRequest) -> str:
    """Return the result links' base: this server under its other loopback name (see module)."""
    parts = urlsplit(request.build_absolute_uri("/sandbox/apyhub/_results/"))
    other = {"localhost": "127.0.0.1", "127.0.0.1": "localhost"}.get(parts.hostname or "")
    netloc = f"{other}:{parts.port}" if other and parts.port else (other or parts.netloc)
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def update(emu: Emulator, job_id: str, **fields: Any) -> None:
    with emu.lock:
        if job_id in emu.jobs:
            emu.jobs[job_id].update(fields)


def extract(emu: Emulator, job_id: str) -> None:
    """Run the job: pending, in-progress (extract for real), then completed or failed."""
    started = time.monotonic()
    with emu.lock:
        job = dict(emu.jobs.get(job_id) or {})
        delay = emu.knobs.processing_delay
    if not job:
        return
    time.sleep(delay / 3)  # waiting for a worker
    update(emu, job_id, status="in-progress")
    out_dir = Path(job["video"]).parent / "out"
    try:
        result = render(job, out_dir)
    except engine.EngineError as exc:
        update(emu, job_id, status="failed", error=f"Audio extraction failed: {exc}")
        return
    time.sleep(max(0.0, delay - (time.monotonic() - started)))
    with emu.lock:
        stall, broken = emu.knobs.stall, emu.knobs.fail_jobs
    if stall:
        return  # never finishes, never moves
    if broken:
        update(emu, job_id, status="failed", error=broken)
        return
    update(
        emu,
        job_id,
        status="completed",
        token=secrets.token_urlsafe(24),
        filename=result.name,
        completed_at=clock(),
    )


def render(job: dict[str, Any], out_dir: Path) -> Path:
    """Extract the job's audio into out_dir; return the file."""
    fmt = job["output_format"]
    out_dir.mkdir(parents=True, exist_ok=True)
    mapped = engine_format(fmt)
    if mapped is not None:
        params = {
            "algorithms": {"normloudness": False, "filtering": False},
            "output_files": [{"format": mapped}],
            "video": {"start_time": job["start_time"], "duration": job["duration"]},
        }
        [output] = engine.process(job["video"], params, out_dir, basename=job["stem"]).outputs
        if fmt == "ogg" and output.path.suffix != ".ogg":
            return output.path.rename(output.path.with_suffix(".ogg"))
        return output.path
    args, ext = FFMPEG_FORMATS[fmt]
    target = out_dir / f"{job['stem']}.{ext}"
    command = [
        engine.ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-ss", f"{job['start_time']:.6f}", "-t", f"{job['duration']:.6f}",
        "-i", file_url(job["video"]), "-map", "0:a:0", "-vn", *args, file_url(target),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise engine.EngineError(f"ffmpeg failed: {lines[-1] if lines else done.returncode}")
    return target


def clock() -> float:
    """Return the emulator's time (tests age a link by moving its completed_at back)."""
    return time.time()


def find_job(request: HttpRequest, emu: Emulator, job_id: str) -> dict[str, Any] | JsonResponse:
    """Return a copy of the caller's job, or the error answer (401, or 404 for anyone else's)."""
    owner = token_of(request, emu)
    if owner is None:
        return fail(401, "Unauthorized")
    with emu.lock:
        job = emu.jobs.get(job_id)
        job = dict(job) if job else None
    if job is None or job["owner"] != owner:
        return fail(404, "Job not found")
    return job


@sandbox_view(KIND)
def job_status(request: HttpRequest, emu: Emulator, job_id: str) -> JsonResponse:
    """GET /job/extract/video/audio/status/{job_id}: the job's status, and its link when done."""
    if request.method != "GET":
        return fail(405, "Method not allowed")
    job = find_job(request, emu, job_id)
    if isinstance(job, JsonResponse):
        return job
    status = job["status"]
    if status in ("pending", "in-progress") and emu.take_unknown_status():
        status = UNDOCUMENTED_STATUS
    body: dict[str, Any] = {"job_id": job["job_id"], "status": status}
    if status == "completed":
        body["data"] = f"{job['storage']}{job['token']}/{job['filename']}"
    if status == "failed":
        body["error"] = {"code": 500, "message": job["error"]}
    return JsonResponse(body)


@sandbox_view(KIND, knobs=False)
def result_file(
    request: HttpRequest, emu: Emulator, token: str, filename: str
) -> FileResponse | JsonResponse:
    """GET /_results/{token}/{file}: the storage host; the token in the link authorises it."""
    if request.method != "GET":
        return fail(405, "Method not allowed")
    with emu.lock:
        job = next(
            (
                dict(j)
                for j in emu.jobs.values()
                if j["token"] and secrets.compare_digest(j["token"], token)
            ),
            None,
        )
    if job is None or job["filename"] != filename:
        return fail(404, "Not found")
    if not job["persistent"] and clock() - job["completed_at"] > LINK_SECONDS:
        return fail(410, "The link has expired")
    out = Path(job["video"]).parent / "out" / job["filename"]
    return FileResponse(out.open("rb"), as_attachment=True, filename=job["filename"])


urlpatterns = [
    path("job/extract/video/audio/file", submit_file),
    path("job/extract/video/audio/url", submit_url),
    path("job/extract/video/audio/status/<str:job_id>", job_status),
    path("_results/<str:token>/<str:filename>", result_file),
]
