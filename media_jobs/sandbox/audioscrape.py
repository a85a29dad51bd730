"""Emulator of Audioscrape's upload API: datasets take uploads, items transcribe, then publish.

Follows seeds/audioscrape-upload-api.txt and providers.md ("Audioscrape"): one upload route with
two intake modes (multipart `audio`, or JSON `audio_url` fetched server-side under the SSRF rules),
errors 400/401/403/404/413/415/422 shaped `{"success": false, "error": "..."}`, and items moving
`queued -> processing -> published`. The item and transcript bodies are unconfirmed upstream; here
the item carries no transcript and `GET /api/items/{id}/transcript` gives it once published, as the
seed describes ("available via the standard transcript ... endpoints"). The transcript is a fixed
two-speaker conversation whose timestamps are scaled to the real duration of the audio.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils import timezone

from media_jobs import engine, netsafe
from media_jobs.sandbox.base import Emulator, bearer, in_background, sandbox_view

KIND = "audioscrape"
# Seed: "Default accepted extensions: mp3, wav, m4a, ogg, flac".
ALLOWED_FORMATS = ("mp3", "wav", "m4a", "ogg", "flac")
# Seed: "Free-tier accounts are hard-capped at 200 MB per upload"; the emulator is a free tier.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
FIRST_ITEM_ID = 84217
# A word the seed never mentions, from the downstream stages it describes (unknown_status knob).
UNDOCUMENTED_STATUS = "speaker_identification"

# (speaker, text): the fixed conversation every item "transcribes" to.
CONVERSATION = (
    ("SPEAKER_00", "Welcome back to the show. Today we talk about loudness."),
    ("SPEAKER_01", "Thanks for having me. Loudness is mostly about consistency."),
    ("SPEAKER_00", "So what should a podcast producer aim for?"),
    ("SPEAKER_01", "Minus sixteen LUFS in stereo, with true peaks below minus one."),
)


def fail(status: int, message: str) -> JsonResponse:
    """Return an error the way Audioscrape shapes them."""
    return JsonResponse({"success": False, "error": message}, status=status)


def authenticate(request: HttpRequest, emu: Emulator) -> str | None:
    """Return the caller's key, or None when the key is missing, refused or expired."""
    key = bearer(request)
    if not key or key.startswith("bad") or emu.knobs.expire_tokens:
        return None
    return key


def extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower().lstrip(".")


def refuse_format(name: str) -> JsonResponse | None:
    """Return the 415 for a file name whose extension the dataset does not allow."""
    ext = extension(name)
    if ext in ALLOWED_FORMATS:
        return None
    shown = f".{ext}" if ext else "a file without an extension"
    return fail(
        415, f"Audio format {shown} is not allowed for this dataset ({', '.join(ALLOWED_FORMATS)})"
    )


@sandbox_view(KIND)
def dataset_items(request: HttpRequest, emu: Emulator, dataset_id: int) -> JsonResponse:
    """POST /api/datasets/{id}/items: multipart or JSON intake."""
    if request.method != "POST":
        return fail(405, "Method not allowed")
    key = authenticate(request, emu)
    if key is None:
        return fail(401, "Missing or invalid API key")
    # Datasets whose id starts with 9 do not exist (or are not the caller's: same answer).
    if str(dataset_id).startswith("9"):
        return fail(404, "Dataset not found")
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 1024 * 1024:
        return fail(413, f"File exceeds the {MAX_UPLOAD_BYTES // 2**20} MB upload limit")
    if request.content_type == "multipart/form-data":
        upload = request.FILES.get("audio")
        if upload is None:
            return fail(400, "Missing required field: audio")
        if refused := refuse_format(upload.name or ""):
            return refused
        if upload.size > MAX_UPLOAD_BYTES:
            return fail(413, f"File exceeds the {MAX_UPLOAD_BYTES // 2**20} MB upload limit")
        item_id = next_item_id(emu)
        audio = emu.job_dir(str(item_id)) / f"audio.{extension(upload.name)}"
        with audio.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        default_title = Path(upload.name).stem
        title = request.POST.get("title", "")
        description = request.POST.get("description", "")
        message = "Audio file queued for transcription with priority 100"
    elif request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"")
        except ValueError:
            return fail(400, "Invalid JSON body")
        if not isinstance(body, dict) or not isinstance(body.get("audio_url"), str):
            return fail(400, "Missing required field: audio_url")
        url = body["audio_url"].strip()
        try:
            parts = urlsplit(url)
        except ValueError:
            return fail(400, "Invalid audio_url")
        if parts.scheme.lower() != "https" or not parts.hostname:
            return fail(400, "audio_url must be an https:// URL")
        if refused := refuse_format(parts.path):
            return refused
        item_id = next_item_id(emu)
        audio = emu.job_dir(str(item_id)) / f"audio.{extension(parts.path)}"
        try:
            with audio.open("wb") as out:
                netsafe.fetch_to_file(url, out, max_bytes=MAX_UPLOAD_BYTES)
        except netsafe.FetchError as exc:
            shutil.rmtree(audio.parent, ignore_errors=True)
            status = exc.status_code if exc.status_code in (400, 413) else 422
            return fail(status, f"Could not fetch audio_url: {exc.reason}")
        default_title = PurePosixPath(parts.path).name
        title = str(body.get("title") or "")
        description = str(body.get("description") or "")
        message = "Audio fetched from URL and queued for transcription"
    else:
        return fail(400, "Send multipart/form-data or application/json")
    now = timezone.now().isoformat()
    with emu.lock:
        emu.jobs[str(item_id)] = {
            "id": item_id,
            "dataset_id": dataset_id,
            "owner": key,
            "title": title or default_title,
            "description": description,
            "status": "queued",
            "duration": None,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "audio": str(audio),
            "transcript": None,
        }
    in_background(lambda: transcribe(emu, str(item_id)), f"{KIND}-{item_id}")
    return JsonResponse({"success": True, "item_id": item_id, "message": message})


def next_item_id(emu: Emulator) -> int:
    with emu.lock:
        item_id = emu.extra.get("next_id", FIRST_ITEM_ID)
        emu.extra["next_id"] = item_id + 1
    return item_id


def update(emu: Emulator, item_id: str, **fields: Any) -> None:
    with emu.lock:
        if item_id in emu.jobs:
            emu.jobs[item_id].update(fields, updated_at=timezone.now().isoformat())


def transcribe(emu: Emulator, item_id: str) -> None:
    """Run the pipeline: queued, processing (probe the audio for real), published."""
    started = time.monotonic()
    with emu.lock:
        item = dict(emu.jobs.get(item_id) or {})
        delay = emu.knobs.processing_delay
    if not item:
        return
    # Queued for a share of the delay, as behind other work in the GPU pool.
    time.sleep(delay / 3)
    update(emu, item_id, status="processing")
    try:
        facts = engine.probe(item["audio"])
    except engine.EngineError as exc:
        update(emu, item_id, status="failed", error=f"Could not decode the audio: {exc}")
        return
    transcript = conversation(facts.duration)
    time.sleep(max(0.0, delay - (time.monotonic() - started)))
    with emu.lock:
        stall, broken = emu.knobs.stall, emu.knobs.fail_jobs
    if stall:
        return  # never finishes, never moves
    if broken:
        update(emu, item_id, status="failed", error=broken)
        return
    update(
        emu,
        item_id,
        status="published",
        duration=round(facts.duration, 3),
        transcript=transcript,
    )


def conversation(duration: float) -> dict[str, Any]:
    """Return the fixed conversation with timestamps spread over the audio's duration."""
    words = [len(text.split()) for _, text in CONVERSATION]
    gap = 0.1 * duration / len(CONVERSATION)
    speaking = duration - gap * len(CONVERSATION)
    segments = []
    at = 0.0
    for (speaker, text), count in zip(CONVERSATION, words, strict=True):
        length = speaking * count / sum(words)
        segments.append(
            {"speaker": speaker, "start": round(at, 3), "end": round(at + length, 3), "text": text}
        )
        at += length + gap
    return {
        "language": "en",
        "text": " ".join(text for _, text in CONVERSATION),
        "segments": segments,
    }


def find_item(request: HttpRequest, emu: Emulator, item_id: int) -> dict[str, Any] | JsonResponse:
    """Return a copy of the caller's item, or the error answer (401, or 404 for anyone else's)."""
    key = authenticate(request, emu)
    if key is None:
        return fail(401, "Missing or invalid API key")
    with emu.lock:
        item = emu.jobs.get(str(item_id))
        item = dict(item) if item else None
    if item is None or item["owner"] != key:
        return fail(404, "Item not found")
    return item


@sandbox_view(KIND)
def item_detail(request: HttpRequest, emu: Emulator, item_id: int) -> JsonResponse:
    """GET /api/items/{id}: the item record and its status."""
    if request.method != "GET":
        return fail(405, "Method not allowed")
    item = find_item(request, emu, item_id)
    if isinstance(item, JsonResponse):
        return item
    status = item["status"]
    if status in ("queued", "processing") and emu.take_unknown_status():
        status = UNDOCUMENTED_STATUS
    body = {
        "id": item["id"],
        "dataset_id": item["dataset_id"],
        "title": item["title"],
        "description": item["description"],
        "status": status,
        "duration": item["duration"],
        "created_at": item["created_at"],
        "updated_at": item["updated_at"],
    }
    if item["error"]:
        body["error"] = item["error"]
    return JsonResponse(body)


@sandbox_view(KIND)
def item_transcript(request: HttpRequest, emu: Emulator, item_id: int) -> JsonResponse:
    """GET /api/items/{id}/transcript: text and diarised segments once published."""
    if request.method != "GET":
        return fail(405, "Method not allowed")
    item = find_item(request, emu, item_id)
    if isinstance(item, JsonResponse):
        return item
    if item["status"] != "published" or item["transcript"] is None:
        return fail(404, "Transcript not available")
    return JsonResponse({"success": True, "item_id": item["id"], **item["transcript"]})


urlpatterns = [
    path("api/datasets/<int:dataset_id>/items", dataset_items),
    path("api/items/<int:item_id>", item_detail),
    path("api/items/<int:item_id>/transcript", item_transcript),
]
