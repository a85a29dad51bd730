"""Emulator of Respeecher's voice marketplace API: projects, folders, recordings, voices, orders.

Follows seeds/respeecher-voice-api.txt and providers.md ("Respeecher"). Strict like the FastAPI
service it imitates: the `api-key` header is required (401 `{"detail": "Not authenticated"}`),
bad or missing fields give 422 `{"detail": [{"loc", "msg", "type"}]}`, other errors
`{"detail": "..."}`. Each account (API key) sees only its own projects, folders and recordings.

A conversion is real: the original is pitch-shifted by the voice's own shift plus the order's
`semitones_correction` (ffmpeg's rubberband, else asetrate + aresample + atempo), coloured with
the voice's timbre filter, and normalised to -16 LUFS by the built-in engine. Orders move
`new -> pre_processing -> processing -> post_processing -> done` (or `error`); the conversion
recording mirrors that in `process_stage` and has `state` processing | done | error. A finished
recording's `url` is an auth-free signed link (like a cloud storage link) that expires.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import subprocess
import time
import uuid
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.utils import timezone
from django.utils.text import slugify

from media_jobs import engine
from media_jobs.engine.ffmpeg import run_ffmpeg
from media_jobs.sandbox.base import Emulator, in_background, sandbox_view

KIND = "respeecher"
# Seed, POST /api/recordings: "the supported audio formats are wav, ogg, mp3 or flac".
UPLOAD_FORMATS = ("wav", "ogg", "mp3", "flac")
# providers.md: a label is "at most 40 chars, `[a-zA-Z0-9 -]`".
LABEL_MAX = 40
LABEL_RE = re.compile(r"^[a-zA-Z0-9 -]*$")
SEMITONES = (-12, 12)
ORDER_STAGES = ("new", "pre_processing", "processing", "post_processing", "done")
# A word the seed never mentions (unknown_status knob): state and stage of a conversion.
UNDOCUMENTED_STATUS = "awaiting_gpu"
# Credits (seconds of conversion) a fresh account has; tests lower emu.extra["credits"].
INITIAL_CREDITS = 36_000
LINK_SECONDS = 3600
USER_NAMESPACE = uuid.UUID("6c1a3c1e-5b7d-4a57-9a38-0d6d2f1e7b11")
CONVERSION_LOUDNESS = {
    "algorithms": {"filtering": True, "normloudness": True, "loudnesstarget": -16, "maxpeak": -1},
    "output_files": [{"format": "wav"}],
}


def _voice(
    vid: str,
    name: str,
    *,
    gender: str,
    age: str,
    pitch_group: str,
    pitch: int,
    shift: int,
    timbre: str,
    accents: list[tuple[str, str, str, str]],
    style: str,
    visibility: str = "public",
) -> dict[str, Any]:
    """Return a catalogue voice shaped like GET /api/v2/voices (private keys start with _)."""
    return {
        "id": vid,
        "owner_id": "00000000-0000-0000-0000-000000000001",
        "name": name,
        "slug": slugify(name),
        "visibility": visibility,
        "species": "human",
        "artist": f"{name} (sandbox)",
        "verified_artist": True,
        "gender": gender,
        "pitch": pitch,
        "age_group": age,
        "pitch_group": pitch_group,
        "nationality": "sandbox",
        "image_url": "",
        "thumbnail_url": "",
        "description": f"Sandbox voice {name}: shifts {shift:+d} semitones.",
        "rating": 5,
        "active": True,
        "created_at": "2024-02-28T11:21:32.401Z",
        "favorite": False,
        "available": True,
        "accents": [
            {
                "id": aid,
                "is_default": n == 0,
                "native": n == 0,
                "info": {"name": aname, "short_name": short, "locale": locale},
                "tiers": [{"name": "basic"}],
                "available": True,
                "settings": {"favorite": False, "semitones_correction": 0},
            }
            for n, (aid, aname, short, locale) in enumerate(accents)
        ],
        "narration_styles": [
            {
                "id": style,
                "is_default": True,
                "info": {"name": "Neutral"},
                "settings": {"favorite": False},
            }
        ],
        "tiers": [{"name": "basic"}],
        "_shift": shift,
        "_timbre": timbre,
    }


# The fixed catalogue: each voice shifts the pitch its own way (Sam not at all, so a test can
# predict the pitch from the correction alone) and colours the sound with its own filter.
SAM = "5a3e0b6c-1f2d-4c8e-9b7a-0d1e2f3a4b01"
AVA = "5a3e0b6c-1f2d-4c8e-9b7a-0d1e2f3a4b02"
BORIS = "5a3e0b6c-1f2d-4c8e-9b7a-0d1e2f3a4b03"
PIP = "5a3e0b6c-1f2d-4c8e-9b7a-0d1e2f3a4b04"
VOICES = [
    _voice(
        SAM,
        "Sam",
        gender="male",
        age="adult",
        pitch_group="mid",
        pitch=120,
        shift=0,
        timbre="equalizer=f=2500:t=q:w=1:g=2",
        accents=[
            ("a1000000-0000-4000-8000-000000000001", "American English", "US", "en-US"),
            ("a1000000-0000-4000-8000-000000000002", "British English", "UK", "en-GB"),
        ],
        style="b1000000-0000-4000-8000-000000000001",
    ),
    _voice(
        AVA,
        "Ava",
        gender="female",
        age="young",
        pitch_group="high",
        pitch=210,
        shift=5,
        timbre="treble=g=3:f=4000",
        accents=[("a2000000-0000-4000-8000-000000000001", "American English", "US", "en-US")],
        style="b2000000-0000-4000-8000-000000000001",
    ),
    _voice(
        BORIS,
        "Boris",
        gender="male",
        age="senior",
        pitch_group="low",
        pitch=95,
        shift=-5,
        timbre="bass=g=4:f=150",
        accents=[("a3000000-0000-4000-8000-000000000001", "Ukrainian", "UA", "uk-UA")],
        style="b3000000-0000-4000-8000-000000000001",
    ),
    _voice(
        PIP,
        "Pip",
        gender="female",
        age="child",
        pitch_group="high",
        pitch=300,
        shift=9,
        timbre="highpass=f=250",
        accents=[("a4000000-0000-4000-8000-000000000001", "American English", "US", "en-US")],
        style="b4000000-0000-4000-8000-000000000001",
        visibility="kids",
    ),
]
VOICES_BY_ID = {v["id"]: v for v in VOICES}


# --- answers --------------------------------------------------------------------------------


def detail(status: int, message: str) -> JsonResponse:
    """Return an error the way FastAPI shapes HTTPException: {"detail": "..."}."""
    return JsonResponse({"detail": message}, status=status)


def invalid(*entries: dict[str, Any]) -> JsonResponse:
    """Return FastAPI's 422: {"detail": [{"loc", "msg", "type"}, ...]}."""
    return JsonResponse({"detail": list(entries)}, status=422)


def problem(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def missing(*loc: Any) -> dict[str, Any]:
    return problem(list(loc), "field required", "value_error.missing")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """Return a stored record without the emulator's private keys."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def now() -> str:
    return timezone.now().isoformat().replace("+00:00", "Z")


def method_not_allowed() -> JsonResponse:
    return detail(405, "Method Not Allowed")


def user_of(request: HttpRequest, emu: Emulator) -> str | JsonResponse:
    """Return the caller's user id, or the 401 for a missing, refused or expired key."""
    key = request.headers.get("api-key", "")
    if not key:
        return detail(401, "Not authenticated")
    if key.startswith("bad") or emu.knobs.expire_tokens:
        return detail(401, "Invalid API key")
    return str(uuid.uuid5(USER_NAMESPACE, key))


def as_uuid(value: Any, loc: list[Any]) -> str | dict[str, Any]:
    """Return value as a canonical UUID string, or the 422 entry saying it is not one."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return problem(loc, "value is not a valid uuid", "type_error.uuid")


def json_body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    """Return the JSON object in the body, or FastAPI's 422 for anything else."""
    try:
        body = json.loads(request.body or b"")
    except ValueError:
        return invalid(problem(["body", 0], "JSON decode error", "value_error.jsondecode"))
    if not isinstance(body, dict):
        return invalid(problem(["body"], "value is not a valid dict", "type_error.dict"))
    return body


def paging(request: HttpRequest, default_limit: int) -> tuple[int, int] | JsonResponse:
    """Return (limit, offset) from the query, or the 422 for non-integers."""
    values = []
    for name, default in (("limit", default_limit), ("offset", 0)):
        raw = request.GET.get(name, str(default))
        try:
            number = int(raw)
        except ValueError:
            return invalid(
                problem(["query", name], "value is not a valid integer", "type_error.integer")
            )
        if number < 0:
            return invalid(
                problem(["query", name], "ensure this value is greater than or equal to 0", "x")
            )
        values.append(number)
    return values[0], values[1]


def page(request: HttpRequest, records: list[dict[str, Any]], default_limit: int) -> JsonResponse:
    """Return {"list": [...], "pagination": {count, limit, offset}} sorted as asked."""
    window = paging(request, default_limit)
    if isinstance(window, JsonResponse):
        return window
    limit, offset = window
    key = request.GET.get("sort", "created_at")
    if key not in ("name", "created_at", "last_recording_at", "pitch", "rating"):
        key = "created_at"
    records = sorted(records, key=lambda r: (str(r.get(key) or ""), r.get("_seq", 0)))
    if request.GET.get("direction", "asc") == "desc":
        records.reverse()
    return JsonResponse(
        {
            "list": [public(r) for r in records[offset : offset + limit]],
            "pagination": {"count": len(records), "limit": limit, "offset": offset},
        }
    )


def table(emu: Emulator, name: str) -> dict[str, dict[str, Any]]:
    """Return one of the emulator's tables (projects, folders, recordings), created on demand."""
    with emu.lock:
        return emu.extra.setdefault(name, {})


def seq(emu: Emulator) -> int:
    """Return a strictly increasing number (keeps creation order on equal timestamps)."""
    with emu.lock:
        emu.extra["seq"] = emu.extra.get("seq", 0) + 1
        return emu.extra["seq"]


def owned(emu: Emulator, name: str, record_id: str, user: str) -> dict[str, Any] | None:
    """Return the caller's record from a table, or None (someone else's is not found either)."""
    with emu.lock:
        record = table(emu, name).get(record_id)
    if record is None or record["_owner"] != user or not record.get("active", True):
        return None
    return record


# --- projects and folders --------------------------------------------------------------------


@sandbox_view(KIND)
def projects(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """GET /api/projects (list) and POST /api/projects {name, owner?, models?}."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method == "GET":
        with emu.lock:
            mine = [p for p in table(emu, "projects").values() if p["_owner"] == user]
        owner = request.GET.get("owner")
        if owner:
            mine = [p for p in mine if p["owner"] == owner]
        return page(request, mine, 50)
    if request.method != "POST":
        return method_not_allowed()
    body = json_body(request)
    if isinstance(body, JsonResponse):
        return body
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        return invalid(missing("body", "name"))
    owner = body.get("owner") or user
    checked = as_uuid(owner, ["body", "owner"])
    if isinstance(checked, dict):
        return invalid(checked)
    if checked != user:
        # Groups are not emulated: the only owner the caller may name is itself.
        return detail(403, "You cannot create projects for this owner")
    with emu.lock:
        taken = {p["url"] for p in table(emu, "projects").values() if p["_owner"] == user}
        slug = base = slugify(name) or "project"
        n = 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        project = {
            "name": name,
            "slug": slug,
            "owner": user,
            "url": slug,
            "models": body.get("models") or {},
            "id": str(uuid.uuid4()),
            "active": True,
            "created_at": now(),
            "last_recording_at": None,
            "_owner": user,
            "_seq": seq(emu),
        }
        table(emu, "projects")[project["id"]] = project
    return JsonResponse(public(project))


@sandbox_view(KIND)
def folders(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """GET /api/folders?project_id= (list) and POST /api/folders {name, project_id}."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method == "GET":
        if "project_id" not in request.GET:
            return invalid(missing("query", "project_id"))
        project_id = as_uuid(request.GET["project_id"], ["query", "project_id"])
        if isinstance(project_id, dict):
            return invalid(project_id)
        if owned(emu, "projects", project_id, user) is None:
            return detail(404, "Project not found")
        with emu.lock:
            mine = [
                f
                for f in table(emu, "folders").values()
                if f["project_id"] == project_id and f["active"]
            ]
        return page(request, mine, 50)
    if request.method != "POST":
        return method_not_allowed()
    body = json_body(request)
    if isinstance(body, JsonResponse):
        return body
    problems = []
    if not isinstance(body.get("name"), str) or not body["name"].strip():
        problems.append(missing("body", "name"))
    if "project_id" not in body:
        problems.append(missing("body", "project_id"))
        project_id: str | dict[str, Any] = ""
    else:
        project_id = as_uuid(body["project_id"], ["body", "project_id"])
        if isinstance(project_id, dict):
            problems.append(project_id)
    if problems:
        return invalid(*problems)
    assert isinstance(project_id, str)
    if owned(emu, "projects", project_id, user) is None:
        return detail(404, "Project not found")
    folder = {
        "name": body["name"],
        "project_id": project_id,
        "parent_id": None,
        "id": str(uuid.uuid4()),
        "active": True,
        "created_at": now(),
        "_owner": user,
        "_seq": seq(emu),
    }
    with emu.lock:
        table(emu, "folders")[folder["id"]] = folder
    return JsonResponse(public(folder))


@sandbox_view(KIND)
def folder_detail(request: HttpRequest, emu: Emulator, folder_id: str) -> JsonResponse:
    """GET /api/folders/{folder_id}."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method != "GET":
        return method_not_allowed()
    checked = as_uuid(folder_id, ["path", "folder_id"])
    if isinstance(checked, dict):
        return invalid(checked)
    folder = owned(emu, "folders", checked, user)
    if folder is None:
        return detail(404, "Folder not found")
    return JsonResponse(public(folder))


# --- recordings ------------------------------------------------------------------------------


def signed_url(request: HttpRequest, emu: Emulator, recording: dict[str, Any]) -> str | None:
    """Return an auth-free link to a recording's file that expires, like a storage link."""
    if not recording.get("_file"):
        return None
    name = recording["file_name"]
    expires = int(time.time()) + LINK_SECONDS
    signature = sign(emu, recording["id"], name, expires)
    prefix = request.path[: request.path.index("/api/")]
    query = urlencode({"expires": expires, "signature": signature})
    return request.build_absolute_uri(f"{prefix}/files/{recording['id']}/{name}?{query}")


def sign(emu: Emulator, recording_id: str, name: str, expires: int) -> str:
    with emu.lock:
        secret = emu.extra.setdefault("link_secret", secrets.token_bytes(32))
    message = f"{recording_id}/{name}:{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def shown(request: HttpRequest, emu: Emulator, recording: dict[str, Any]) -> dict[str, Any]:
    """Return a recording as the API shows it, with a fresh signed url once it has a file."""
    body = public(recording)
    body["url"] = signed_url(request, emu, recording)
    return body


@sandbox_view(KIND)
def recordings(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """POST /api/recordings (multipart upload of an original) and GET /api/recordings (list)."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method == "GET":
        folder_id, project_id = request.GET.get("folder_id"), request.GET.get("project_id")
        with emu.lock:
            mine = [
                r
                for r in table(emu, "recordings").values()
                if r["_owner"] == user
                and r["active"]
                and (not folder_id or r["parent_folder_id"] == folder_id)
                and (not project_id or r["project_id"] == project_id)
            ]
        return page(request, mine, 50)
    if request.method != "POST":
        return method_not_allowed()
    form = request.POST if request.content_type == "multipart/form-data" else {}
    files = request.FILES if request.content_type == "multipart/form-data" else {}
    problems = []
    upload = files.get("data")
    if upload is None:
        problems.append(missing("body", "data"))
    for name in ("parent_folder_id", "microphone", "label"):
        if name not in form:
            problems.append(missing("body", name))
    folder_id: str | dict[str, Any] = ""
    if "parent_folder_id" in form:
        folder_id = as_uuid(form["parent_folder_id"], ["body", "parent_folder_id"])
        if isinstance(folder_id, dict):
            problems.append(folder_id)
    label = form.get("label", "")
    if len(label) > LABEL_MAX:
        problems.append(
            problem(
                ["body", "label"],
                f"ensure this value has at most {LABEL_MAX} characters",
                "value_error.any_str.max_length",
            )
        )
    if not LABEL_RE.match(label):
        problems.append(
            problem(
                ["body", "label"],
                'string does not match regex "^[a-zA-Z0-9 -]*$"',
                "value_error.str.regex",
            )
        )
    if problems:
        return invalid(*problems)
    assert isinstance(folder_id, str) and upload is not None
    folder = owned(emu, "folders", folder_id, user)
    if folder is None:
        return detail(404, "Folder not found")
    ext = PurePosixPath(upload.name or "").suffix.lower().lstrip(".")
    if ext not in UPLOAD_FORMATS:
        return detail(
            400, f"Unsupported audio format. Supported formats: {', '.join(UPLOAD_FORMATS)}"
        )
    recording_id = str(uuid.uuid4())
    audio = emu.job_dir(recording_id) / f"original.{ext}"
    with audio.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    try:
        facts = engine.probe(audio)
    except engine.EngineError:
        return detail(400, "Could not decode the audio file")
    recording = new_recording(
        emu,
        recording_id,
        user=user,
        folder=folder,
        kind="original",
        label=label,
        file_name=PurePosixPath(upload.name).name,
        microphone=form["microphone"],
        state="done",
        process_stage="done",
        original_id=None,
    )
    recording.update(size=audio.stat().st_size, duration=round(facts.duration, 3), _file=str(audio))
    with emu.lock:
        table(emu, "recordings")[recording_id] = recording
        project = table(emu, "projects").get(folder["project_id"])
        if project:
            project["last_recording_at"] = recording["created_at"]
    return JsonResponse(shown(request, emu, recording))


def new_recording(
    emu: Emulator,
    recording_id: str,
    *,
    user: str,
    folder: dict[str, Any],
    kind: str,
    label: str,
    file_name: str,
    microphone: str,
    state: str,
    process_stage: str,
    original_id: str | None,
    voice: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    calibration_id: str | None = None,
) -> dict[str, Any]:
    """Return a recording shaped like the seed's recording body."""
    return {
        "id": recording_id,
        "project_id": folder["project_id"],
        "parent_folder_id": folder["id"],
        "type": kind,
        "url": None,
        "waveform_url": None,
        "file_name": file_name,
        "label": label,
        "state": state,
        "original_id": original_id,
        "model_id": voice["id"] if voice else None,
        "model_name": voice["name"] if voice else None,
        "calibration_id": calibration_id,
        "calibration_value": None,
        "calibration_name": None,
        "microphone": microphone,
        "size": 0,
        "duration": 0,
        "starred": False,
        "tts": False,
        "tts_voice": None,
        "tts_voice_id": None,
        "text": None,
        "params": params or {},
        "error": None,
        "active": True,
        "created_at": now(),
        "converted_at": None,
        "listen_count": 0,
        "process_stage": process_stage,
        "note": None,
        "_owner": user,
        "_seq": seq(emu),
        "_file": None,
    }


@sandbox_view(KIND)
def recording_detail(request: HttpRequest, emu: Emulator, recording_id: str) -> JsonResponse:
    """GET /api/recordings/{recording_id}."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method != "GET":
        return method_not_allowed()
    checked = as_uuid(recording_id, ["path", "recording_id"])
    if isinstance(checked, dict):
        return invalid(checked)
    recording = owned(emu, "recordings", checked, user)
    if recording is None:
        return detail(404, "Recording not found")
    body = shown(request, emu, recording)
    if body["type"] == "conversion" and body["state"] != "done" and emu.take_unknown_status():
        body["state"] = body["process_stage"] = UNDOCUMENTED_STATUS
    return JsonResponse(body)


@sandbox_view(KIND)
def conversions(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """GET /api/recordings/conversions?original_id=: an original's conversions."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method != "GET":
        return method_not_allowed()
    if "original_id" not in request.GET:
        return invalid(missing("query", "original_id"))
    original_id = as_uuid(request.GET["original_id"], ["query", "original_id"])
    if isinstance(original_id, dict):
        return invalid(original_id)
    if owned(emu, "recordings", original_id, user) is None:
        return detail(404, "Recording not found")
    with emu.lock:
        mine = [
            r
            for r in table(emu, "recordings").values()
            if r["original_id"] == original_id and r["active"]
        ]
    response = page(request, mine, 50)
    body = json.loads(response.content)
    for entry in body["list"]:
        entry["url"] = signed_url(request, emu, table(emu, "recordings")[entry["id"]])
    return JsonResponse(body)


@sandbox_view(KIND)
def recording_file(request: HttpRequest, emu: Emulator, recording_id: str, name: str):
    """GET /files/{id}/{name}?expires=&signature=: the signed, auth-free storage link."""
    if request.method != "GET":
        return HttpResponse(status=405)
    expires = request.GET.get("expires", "")
    signature = request.GET.get("signature", "")
    if not expires.isdigit() or int(expires) < time.time():
        return HttpResponse("Request has expired", status=403, content_type="text/plain")
    if not hmac.compare_digest(sign(emu, recording_id, name, int(expires)), signature):
        return HttpResponse("Signature does not match", status=403, content_type="text/plain")
    with emu.lock:
        recording = table(emu, "recordings").get(recording_id)
    if recording is None or not recording.get("_file") or recording["file_name"] != name:
        return HttpResponse("Not found", status=404, content_type="text/plain")
    return FileResponse(Path(recording["_file"]).open("rb"), as_attachment=True, filename=name)


# --- voices, credits -------------------------------------------------------------------------


@sandbox_view(KIND)
def voices(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """GET /api/v2/voices: the fixed catalogue, filterable by the documented attributes."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method != "GET":
        return method_not_allowed()
    chosen = list(VOICES)
    for name in ("visibility", "species", "gender", "age_group", "pitch_group", "nationality"):
        if request.GET.get(name):
            chosen = [v for v in chosen if v[name] == request.GET[name]]
    return page(request, chosen, 25)


def credits_left(emu: Emulator) -> float:
    with emu.lock:
        return emu.extra.setdefault("credits", INITIAL_CREDITS)


@sandbox_view(KIND)
def credits_view(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """GET /api/credits."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method != "GET":
        return method_not_allowed()
    return JsonResponse({"credits": int(credits_left(emu)), "initial_credits": INITIAL_CREDITS})


# --- orders ----------------------------------------------------------------------------------


def check_conversion(n: int, entry: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return one validated conversion request and the 422 entries it earns."""
    loc = ["body", "conversions", n]
    if not isinstance(entry, dict):
        return {}, [problem(loc, "value is not a valid dict", "type_error.dict")]
    problems: list[dict[str, Any]] = []
    clean: dict[str, Any] = {}
    if "voice_id" not in entry:
        problems.append(missing(*loc, "voice_id"))
    for key in ("voice_id", "accent_id", "narration_style_id"):
        if entry.get(key) is None:
            continue
        checked = as_uuid(entry[key], [*loc, key])
        if isinstance(checked, dict):
            problems.append(checked)
        else:
            clean[key] = checked
    shift = entry.get("semitones_correction")
    if shift is not None:
        if isinstance(shift, bool) or not isinstance(shift, int):
            problems.append(
                problem(
                    [*loc, "semitones_correction"],
                    "value is not a valid integer",
                    "type_error.integer",
                )
            )
        elif not SEMITONES[0] <= shift <= SEMITONES[1]:
            bound = "less than or equal to 12" if shift > 0 else "greater than or equal to -12"
            problems.append(
                problem(
                    [*loc, "semitones_correction"],
                    f"ensure this value is {bound}",
                    "value_error.number.not_le" if shift > 0 else "value_error.number.not_ge",
                )
            )
        else:
            clean["semitones_correction"] = shift
    label = entry.get("label")
    if label is not None:
        if not isinstance(label, str) or len(label) > LABEL_MAX or not LABEL_RE.match(label):
            problems.append(problem([*loc, "label"], "invalid label", "value_error"))
        else:
            clean["label"] = label
    if problems or "voice_id" not in clean:
        return clean, problems
    voice = VOICES_BY_ID.get(clean["voice_id"])
    if voice is None:
        return clean, [problem([*loc, "voice_id"], "Voice not found", "value_error")]
    accents = {a["id"] for a in voice["accents"]}
    if clean.get("accent_id") and clean["accent_id"] not in accents:
        problems.append(
            problem([*loc, "accent_id"], "Accent is not available for this voice", "value_error")
        )
    styles = {s["id"] for s in voice["narration_styles"]}
    if clean.get("narration_style_id") and clean["narration_style_id"] not in styles:
        problems.append(
            problem(
                [*loc, "narration_style_id"],
                "Narration style is not available for this voice",
                "value_error",
            )
        )
    return clean, problems


@sandbox_view(KIND)
def orders(request: HttpRequest, emu: Emulator) -> JsonResponse:
    """POST /api/v2/orders {original_id, conversions[], calibration_id?, use_calibration?}."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method != "POST":
        return method_not_allowed()
    body = json_body(request)
    if isinstance(body, JsonResponse):
        return body
    problems: list[dict[str, Any]] = []
    original_id: str | dict[str, Any] = ""
    if "original_id" not in body:
        problems.append(missing("body", "original_id"))
    else:
        original_id = as_uuid(body["original_id"], ["body", "original_id"])
        if isinstance(original_id, dict):
            problems.append(original_id)
    requested = body.get("conversions")
    if "conversions" not in body:
        problems.append(missing("body", "conversions"))
        requested = []
    elif not isinstance(requested, list):
        problems.append(problem(["body", "conversions"], "value is not a valid list", "type_error"))
        requested = []
    elif not requested:
        problems.append(
            problem(
                ["body", "conversions"],
                "ensure this value has at least 1 items",
                "value_error.list.min_items",
            )
        )
    wanted = []
    for n, entry in enumerate(requested):
        clean, found = check_conversion(n, entry)
        problems += found
        wanted.append(clean)
    calibration_id = body.get("calibration_id")
    if calibration_id is not None:
        checked = as_uuid(calibration_id, ["body", "calibration_id"])
        if isinstance(checked, dict):
            problems.append(checked)
        calibration_id = checked
    use_calibration = body.get("use_calibration", False)
    if not isinstance(use_calibration, bool):
        problems.append(
            problem(["body", "use_calibration"], "value could not be parsed to a boolean", "x")
        )
    if problems:
        return invalid(*problems)
    assert isinstance(original_id, str)
    original = owned(emu, "recordings", original_id, user)
    if original is None or original["type"] != "original":
        return detail(404, "Original recording not found")
    cost = max(1.0, float(original["duration"] or 0)) * len(wanted)
    with emu.lock:
        if credits_left(emu) < cost:
            return detail(402, "Not enough credits to convert this recording")
        emu.extra["credits"] = credits_left(emu) - cost
        folder = table(emu, "folders")[original["parent_folder_id"]]
    created = []
    for clean in wanted:
        voice = VOICES_BY_ID[clean["voice_id"]]
        conversion_id = str(uuid.uuid4())
        stem = PurePosixPath(original["file_name"]).stem
        recording = new_recording(
            emu,
            conversion_id,
            user=user,
            folder=folder,
            kind="conversion",
            label=clean.get("label") or original["label"],
            file_name=f"{slugify(stem) or 'recording'}-{voice['slug']}.wav",
            microphone=original["microphone"],
            state="processing",
            process_stage="new",
            original_id=original_id,
            voice=voice,
            params={
                k: v
                for k, v in clean.items()
                if k in ("accent_id", "narration_style_id", "semitones_correction")
            },
            calibration_id=calibration_id if use_calibration else None,
        )
        order = {
            "id": str(uuid.uuid4()),
            "original_id": original_id,
            "conversion_id": conversion_id,
            "voice_id": voice["id"],
            "accent_id": clean.get("accent_id"),
            "narration_style_id": clean.get("narration_style_id"),
            "semitones_correction": clean.get("semitones_correction", 0),
            "state": "new",
            "error": None,
            "created_at": recording["created_at"],
            "updated_at": recording["created_at"],
            "_owner": user,
        }
        with emu.lock:
            table(emu, "recordings")[conversion_id] = recording
            emu.jobs[order["id"]] = order
        created.append(order)
    ids = [o["id"] for o in created]
    # Answer with the orders as created: the conversion thread starts changing them at once.
    answer = [public(o) for o in created]
    in_background(lambda: convert_all(emu, ids), f"{KIND}-{ids[0]}")
    return JsonResponse(answer, safe=False)


@sandbox_view(KIND)
def retry_order(request: HttpRequest, emu: Emulator, recording_id: str) -> JsonResponse:
    """POST /api/v2/orders/retry/{recording_id}: run failed conversions (of an original) again."""
    user = user_of(request, emu)
    if isinstance(user, JsonResponse):
        return user
    if request.method != "POST":
        return method_not_allowed()
    checked = as_uuid(recording_id, ["path", "recording_id"])
    if isinstance(checked, dict):
        return invalid(checked)
    recording = owned(emu, "recordings", checked, user)
    if recording is None:
        return detail(404, "Recording not found")
    with emu.lock:
        failed = [
            o
            for o in emu.jobs.values()
            if o["state"] == "error" and checked in (o["conversion_id"], o["original_id"])
        ]
        for order in failed:
            order.update(state="new", error=None, updated_at=now())
            table(emu, "recordings")[order["conversion_id"]].update(
                state="processing", process_stage="new", error=None
            )
    if not failed:
        return detail(400, "There is no failed conversion to retry")
    ids = [o["id"] for o in failed]
    answer = [public(o) for o in failed]
    in_background(lambda: convert_all(emu, ids), f"{KIND}-retry-{ids[0]}")
    return JsonResponse(answer, safe=False)


# --- the conversion itself -------------------------------------------------------------------


def advance(emu: Emulator, order_id: str, stage: str, **fields: Any) -> None:
    """Move an order and its conversion recording to a stage."""
    with emu.lock:
        order = emu.jobs.get(order_id)
        if order is None:
            return
        order.update(state=stage, updated_at=now())
        if stage == "error":
            order["error"] = fields.get("error")
        recording = table(emu, "recordings").get(order["conversion_id"])
        if recording is not None:
            state = stage if stage in ("done", "error") else "processing"
            recording.update(state=state, process_stage=stage, **fields)


def convert_all(emu: Emulator, order_ids: list[str]) -> None:
    """Run the orders of one request, one after another (as one GPU would)."""
    for order_id in order_ids:
        convert(emu, order_id)


def convert(emu: Emulator, order_id: str) -> None:
    """Convert one order: shift the pitch, colour the timbre, normalise; or fail as told."""
    with emu.lock:
        order = dict(emu.jobs.get(order_id) or {})
        knobs = emu.knobs
        delay, stall, broken = knobs.processing_delay, knobs.stall, knobs.fail_jobs
    if not order:
        return
    if stall:
        return  # never moves past "new"
    step = delay / 4
    time.sleep(step)
    advance(emu, order_id, "pre_processing")
    with emu.lock:
        recordings = table(emu, "recordings")
        original = dict(recordings[order["original_id"]])
        conversion = dict(recordings[order["conversion_id"]])
    voice = VOICES_BY_ID[order["voice_id"]]
    time.sleep(step)
    advance(emu, order_id, "processing")
    if broken:
        advance(emu, order_id, "error", error=broken)
        return
    workdir = emu.job_dir(order["conversion_id"])
    semitones = voice["_shift"] + (order.get("semitones_correction") or 0)
    try:
        shifted = workdir / "shifted.wav"
        filters = [*pitch_filters(original["_file"], semitones), voice["_timbre"]]
        run_ffmpeg(
            ["-i", original["_file"], "-map", "0:a:0", "-af", ",".join(filters), "-y", str(shifted)]
        )
        result = engine.process(
            shifted,
            CONVERSION_LOUDNESS,
            workdir / "out",
            basename=Path(conversion["file_name"]).stem,
        )
    except engine.EngineError as exc:
        advance(emu, order_id, "error", error=f"Conversion failed: {exc}")
        return
    time.sleep(step)
    advance(emu, order_id, "post_processing")
    output = result.outputs[0]
    time.sleep(step)
    advance(
        emu,
        order_id,
        "done",
        _file=str(output.path),
        file_name=output.filename,
        size=output.size,
        duration=round(engine.probe(output.path).duration, 3),
        converted_at=now(),
    )


@cache
def has_rubberband() -> bool:
    """Return whether the bundled ffmpeg has the rubberband filter (pitch without speed change)."""
    done = subprocess.run(
        [engine.ffmpeg_binary(), "-hide_banner", "-filters"],
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return b" rubberband " in done.stdout


def pitch_filters(path: str, semitones: int) -> list[str]:
    """Return the ffmpeg filters that move the pitch by semitones and keep the duration."""
    if not semitones:
        return []
    ratio = 2 ** (semitones / 12)
    if has_rubberband():
        return [f"rubberband=pitch={ratio:.6f}"]
    # Play faster (pitch up, shorter), back to the rate, then stretch to the old length.
    rate = engine.probe(path).sample_rate or 44100
    return [f"asetrate={rate * ratio:.3f}", f"aresample={rate}", f"atempo={1 / ratio:.6f}"]


urlpatterns = [
    path("api/projects", projects),
    path("api/folders", folders),
    path("api/folders/<str:folder_id>", folder_detail),
    path("api/recordings", recordings),
    path("api/recordings/conversions", conversions),
    path("api/recordings/<str:recording_id>", recording_detail),
    path("api/v2/voices", voices),
    path("api/v2/orders", orders),
    path("api/v2/orders/retry/<str:recording_id>", retry_order),
    path("api/credits", credits_view),
    path("files/<str:recording_id>/<str:name>", recording_file),
]
