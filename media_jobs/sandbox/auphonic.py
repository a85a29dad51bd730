"""Emulator of the Auphonic API (providers.md "Auphonic", seeds/auphonic-api.txt).

Productions (JSON API and Simple API), uploads, start/stop/status, result downloads behind a
redirect, the account (user.json), webhooks, and the OAuth2 authorization-code flow. Processing
is real: the production's algorithms and output files go to the built-in engine, which shares
Auphonic's names. What the engine refuses (model-based cutters, anything it has not learnt yet)
is left out as a stand-in, speech recognition answers a placeholder transcript, and formats the
engine cannot write end the production in Error (status 2). Input URLs are fetched only from
the portal's own storage (its S3 endpoint), so a demo sandbox cannot be aimed at other hosts.

Credentials: `Authorization: bearer <key>` (any non-empty key not starting with "bad"), an
access token issued by oauth2/token/, HTTP Basic, or `?bearer_token=`. Tests may set
`emulator("auphonic").extra["oauth_deny"] = True` to make the consent page say no.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import path
from django.utils import timezone

from media_jobs import engine
from media_jobs.engine import chapters as engine_chapters
from media_jobs.engine import tags as engine_tags
from media_jobs.sandbox.base import Emulator, in_background, sandbox_view, send_webhook

log = logging.getLogger(__name__)

KIND = "auphonic"
STATUS_STRINGS = {
    0: "File Upload",
    1: "Waiting",
    2: "Error",
    3: "Done",
    4: "Audio Processing",
    5: "Audio Encoding",
    6: "Outgoing File Transfer",
    7: "Mono Mixdown",
    8: "Split Audio",
    9: "Incomplete",
    10: "Not Started",
    11: "Outdated",
    12: "Incoming File Transfer",
    13: "Stopping",
    14: "Speech Recognition",
}
BUSY = frozenset({0, 1, 4, 5, 6, 7, 8, 12, 13, 14})
UNKNOWN_STATUS = (99, "Sandbox Mystery Stage")  # what the unknown_status knob answers

TOKEN_PREFIX = "aphsbx_"  # noqa: S105 - marks sandbox-issued tokens, not a secret
TOKEN_SECONDS = 3600
CODE_SECONDS = 300
OAUTH_USER = "sandbox-oauth-user"
FILE_URL_SECONDS = 600

TOGGLES = frozenset(
    {
        "filtering", "hipfilter", "leveler", "autolevel", "normloudness", "denoise", "dehum",
        "debreath", "deverb", "gate", "crossgate", "silence_cutter", "filler_cutter",
        "cough_cutter", "music_cutter", "speech_isolation",
    }
)  # fmt: skip
SETTINGS = frozenset(
    {
        "loudnesstarget", "maxpeak", "denoiseamount", "denoisemethod", "dehumamount",
        "dehumbase", "deverbamount", "debreathamount", "levelerstrength", "compressor",
        "musicgain", "backforeground", "bgreduction", "gatestrength", "loudnessmethod",
    }
)  # fmt: skip
# Auphonic's output formats (seed, "Available output formats include"). Each renders with the
# engine's format of the same name, or the nearest one an older engine has (FALLBACKS).
FORMATS = frozenset(
    {"mp3", "mp3-vbr", "vorbis", "opus", "aac", "flac", "alac", "wav", "wav-24bit", "video",
     "audiogram", "tracks"}
)  # fmt: skip
FALLBACKS = {"mp3-vbr": "mp3", "wav-24bit": "wav"}
TEXT_FORMATS = {"speech": "json", "transcript": "html", "subtitle": "srt"}
OUTPUT_KEYS = frozenset(
    {"format", "bitrate", "filename", "suffix", "mono_mixdown", "ending", "split_on_chapters"}
)
METADATA_FIELDS = (
    "title", "artist", "album", "track", "subtitle", "append_chapters", "summary", "genre",
    "year", "publisher", "url", "license", "license_url", "tags", "location",
)  # fmt: skip
CREATE_FIELDS = frozenset(
    {
        "preset", "input_file", "metadata", "output_files", "algorithms", "chapters",
        "multi_input_files", "speech_recognition", "webhook", "is_multitrack", "action",
        "service", "output_basename", "outgoing_services", "reset_data", "image",
    }
)  # fmt: skip
# Auphonic's defaults when neither the production nor its preset sets an algorithm.
DEFAULT_ALGORITHMS = {"filtering": True, "leveler": True, "normloudness": True,
                      "loudnesstarget": -16, "maxpeak": 0}  # fmt: skip
# Presets the sandbox account owns (real presets live in the Auphonic account).
PRESETS: dict[str, dict[str, Any]] = {
    "sandboxPodcastPreset16": {
        "preset_name": "Sandbox podcast (-16 LUFS, MP3)",
        "algorithms": {"filtering": True, "normloudness": True, "loudnesstarget": -16},
        "output_files": [{"format": "mp3", "bitrate": 128}],
        "metadata": {"artist": "Sandbox Podcast"},
    },
}


# --- answers -----------------------------------------------------------------------------


def envelope(
    data: Any = None,
    *,
    status: int = 200,
    error_message: str = "",
    form_errors: dict[str, Any] | None = None,
    error_code: str | None = None,
) -> JsonResponse:
    """Answer in Auphonic's envelope, errors included (providers.md)."""
    return JsonResponse(
        {
            "status_code": status,
            "error_code": error_code,
            "error_message": error_message,
            "form_errors": form_errors or {},
            "data": {} if data is None else data,
        },
        status=status,
    )


def invalid(form_errors: dict[str, Any], message: str = "Invalid data.") -> JsonResponse:
    return envelope(status=400, error_message=message, form_errors=form_errors)


def not_found(uuid: str) -> JsonResponse:
    return envelope(
        status=404, error_message=f"Production {uuid} not found.", error_code="not_found"
    )


def not_allowed(request: HttpRequest, allowed: str) -> JsonResponse:
    response = envelope(status=405, error_message=f"Method {request.method} not allowed.")
    response["Allow"] = allowed
    return response


# --- authentication ----------------------------------------------------------------------


def authenticate(request: HttpRequest, emu: Emulator) -> str | None:
    """Return the user a request acts for, or None (seed, "Authentication")."""
    if emu.knobs.expire_tokens:
        return None
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if user and password and not password.startswith("bad"):
            return f"basic-{user}"
        return None
    secret = value if scheme.lower() == "bearer" else request.GET.get("bearer_token", "")
    if not secret:
        return None
    if secret.startswith(TOKEN_PREFIX):
        with emu.lock:
            token = emu.extra.setdefault("tokens", {}).get(secret)
        if token is None or token["expires"] < time.time():
            return None
        return token["user"]
    if secret.startswith("bad"):
        return None
    return "sandbox-" + hashlib.sha256(secret.encode()).hexdigest()[:8]


def unauthorized() -> JsonResponse:
    response = envelope(
        status=401,
        error_message="Authentication credentials were not provided or are invalid.",
        error_code="not_authenticated",
    )
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def api(view):
    """Wrap an API view: sandbox checks and knobs, then authentication (401 in the envelope)."""

    def authenticated(request: HttpRequest, emu: Emulator, *args: Any, **kwargs: Any):
        user = authenticate(request, emu)
        if user is None:
            return unauthorized()
        return view(request, emu, user, *args, **kwargs)

    authenticated.__name__ = view.__name__
    authenticated.__doc__ = view.__doc__
    return sandbox_view(KIND)(authenticated)


def owned(emu: Emulator, user: str, uuid: str) -> dict[str, Any] | None:
    """Return the user's production (another user's is as absent as a missing one)."""
    with emu.lock:
        production = emu.jobs.get(uuid)
    return production if production is not None and production["_user"] == user else None


# --- productions -------------------------------------------------------------------------


def new_production(emu: Emulator, user: str) -> dict[str, Any]:
    now = timezone.now().isoformat()
    return {
        "uuid": emu.new_id(),
        "status": 9,
        "status_string": STATUS_STRINGS[9],
        "error_message": "",
        "error_status": None,
        "warning_message": "",
        "preset": None,
        "service": None,
        "input_file": None,
        "output_basename": "",
        "metadata": {},
        "algorithms": {},
        "output_files": [],
        "chapters": [],
        "multi_input_files": [],
        "outgoing_services": [],
        "speech_recognition": None,
        "is_multitrack": False,
        "webhook": None,
        "statistics": {},
        "length": 0.0,
        "length_timestring": "00:00:00",
        "used_credits": None,
        "start_allowed": False,
        "creation_time": now,
        "change_time": now,
        "_user": user,
        "_input_path": None,
        "_results": {},
        "_stop": False,
        "_stalled": False,
        "_run": 0,
    }


def public(production: dict[str, Any], request: HttpRequest) -> dict[str, Any]:
    """Return a production as the API shows it (download URLs on this host)."""
    data = {k: v for k, v in production.items() if not k.startswith("_")}
    outputs = []
    for spec in production["output_files"]:
        spec = dict(spec)
        result = production["_results"].get(spec.get("filename") or "")
        spec["download_url"] = (
            request.build_absolute_uri(
                f"/sandbox/{KIND}/api/download/audio-result/{production['uuid']}/{spec['filename']}"
            )
            if result
            else None
        )
        outputs.append(spec)
    data["output_files"] = outputs
    return data


def set_status(emu: Emulator, production: dict[str, Any], status: int, **fields: Any) -> None:
    with emu.lock:
        production.update(
            status=status,
            status_string=STATUS_STRINGS[status],
            change_time=timezone.now().isoformat(),
            **fields,
        )


def apply_fields(emu: Emulator, production: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Check a create/update body and apply it; return form_errors (empty when fine)."""
    errors: dict[str, list[str]] = {}

    def bad(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    for key in sorted(set(body) - CREATE_FIELDS):
        bad(key, "Unknown field.")
    if body.get("service"):
        bad("service", "External services are not emulated by the sandbox.")
    if body.get("is_multitrack") or body.get("multi_input_files"):
        bad("multi_input_files", "Multitrack productions are not emulated by the sandbox.")
    preset = body.get("preset")
    if preset is not None and preset not in PRESETS:
        bad("preset", f"Preset {preset!r} does not exist.")
    input_file = body.get("input_file")
    if input_file is not None and not (
        isinstance(input_file, str) and urlsplit(input_file).scheme in ("http", "https")
    ):
        bad("input_file", "Expected an http(s) URL (or an upload to upload.json).")
    webhook = body.get("webhook")
    if webhook not in (None, "") and not (
        isinstance(webhook, str) and urlsplit(webhook).scheme in ("http", "https")
    ):
        bad("webhook", "Expected an http(s) URL.")
    for key in ("metadata", "algorithms"):
        if key in body and not isinstance(body[key], dict):
            bad(key, "Expected an object.")
    for name, value in (body.get("algorithms") or {}).items():
        if name in TOGGLES:
            if not isinstance(value, bool):
                bad("algorithms", f"{name}: expected true or false.")
        elif name == "loudnesstarget":
            if not _in_range(value, -31, -13):
                bad("algorithms", f"loudnesstarget: {value!r} is not between -31 and -13 LUFS.")
        elif name == "maxpeak":
            if not _in_range(value, -10, 0):
                bad("algorithms", f"maxpeak: {value!r} is not between -10 and 0 dBTP.")
        elif name not in SETTINGS:
            bad("algorithms", f"Unknown algorithm {name!r}.")
    outputs = body.get("output_files")
    if outputs is not None:
        if not isinstance(outputs, list):
            bad("output_files", "Expected a list.")
            outputs = []
        for index, spec in enumerate(outputs):
            if not isinstance(spec, dict):
                bad("output_files", f"[{index}]: expected an object.")
                continue
            for key in sorted(set(spec) - OUTPUT_KEYS):
                bad("output_files", f"[{index}]: unknown option {key!r}.")
            fmt = spec.get("format")
            if fmt not in FORMATS and fmt not in TEXT_FORMATS:
                bad("output_files", f"[{index}]: unknown format {fmt!r}.")
            if "bitrate" in spec and not _in_range(spec["bitrate"], 8, 512):
                bad("output_files", f"[{index}]: invalid bitrate {spec['bitrate']!r}.")
            for key in ("filename", "suffix", "ending"):
                value = spec.get(key)
                if value is not None and (not isinstance(value, str) or "/" in value):
                    bad("output_files", f"[{index}]: invalid {key} {value!r}.")
    chapters = body.get("chapters")
    chapter_start = re.compile(r"^\d{1,2}:\d{2}:\d{2}(\.\d{1,3})?$")
    if chapters is not None and (
        not isinstance(chapters, list)
        or not all(
            isinstance(c, dict) and chapter_start.match(str(c.get("start", ""))) for c in chapters
        )
    ):
        bad("chapters", "Expected a list of {start: HH:MM:SS[.mmm], title}.")
    speech = body.get("speech_recognition")
    if speech is not None and not isinstance(speech, dict):
        bad("speech_recognition", "Expected an object.")
    if errors:
        return errors

    with emu.lock:
        if preset is not None:
            production["preset"] = preset
        if input_file is not None:
            production["input_file"] = input_file
            production["_input_path"] = None
        if "webhook" in body:
            production["webhook"] = webhook or None
        if "metadata" in body:
            production["metadata"] = {**production["metadata"], **body["metadata"]}
        if "algorithms" in body:
            production["algorithms"] = {**production["algorithms"], **body["algorithms"]}
        if outputs is not None:
            production["output_files"] = [
                {
                    "format": o["format"],
                    "bitrate": o.get("bitrate"),
                    "suffix": o.get("suffix") or "",
                    "ending": o.get("ending") or "",
                    "filename": o.get("filename"),
                    "mono_mixdown": bool(o.get("mono_mixdown")),
                    "split_on_chapters": bool(o.get("split_on_chapters")),
                    "size": None,
                    "size_string": None,
                    "checksum": None,
                    "outgoing_services": [],
                }
                for o in outputs
            ]
        for key in ("chapters", "speech_recognition", "output_basename"):
            if key in body:
                production[key] = body[key]
        if body.get("reset_data"):
            production.update(statistics={}, error_message="", _results={})
            production["status"] = 10 if has_input(production) else 9
        if production["status"] in (9, 10):
            production["status"] = 10 if has_input(production) else 9
        production["status_string"] = STATUS_STRINGS[production["status"]]
        production["start_allowed"] = has_input(production)
        production["change_time"] = timezone.now().isoformat()
    return {}


def _in_range(value: Any, low: float, high: float) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return low <= number <= high


def has_input(production: dict[str, Any]) -> bool:
    return bool(production["_input_path"] or production["input_file"])


@api
def productions(request: HttpRequest, emu: Emulator, user: str) -> HttpResponse:
    """GET: the user's productions; POST (JSON): create one (seed, "JSON API")."""
    if request.method == "GET":
        with emu.lock:
            mine = [p for p in emu.jobs.values() if p["_user"] == user]
        mine.sort(key=lambda p: p["creation_time"], reverse=True)
        offset = int(request.GET.get("offset") or 0)
        limit = int(request.GET.get("limit") or 100)
        mine = mine[offset : offset + limit]
        if request.GET.get("uuids_only"):
            return envelope([p["uuid"] for p in mine])
        return envelope([public(p, request) for p in mine])
    if request.method != "POST":
        return not_allowed(request, "GET, POST")
    if request.content_type != "application/json":
        return envelope(
            status=400, error_message="Send JSON data (Content-Type: application/json)."
        )
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return envelope(status=400, error_message="Invalid JSON data.")
    if not isinstance(body, dict):
        return envelope(status=400, error_message="Expected a JSON object.")
    production = new_production(emu, user)
    errors = apply_fields(emu, production, body)
    if errors:
        return invalid(errors)
    return created(request, emu, production, start=body.get("action") == "start")


def created(
    request: HttpRequest, emu: Emulator, production: dict[str, Any], *, start: bool
) -> JsonResponse:
    """Keep a new production, started when asked (refused when it cannot start)."""
    if start and not has_input(production):
        return envelope(
            status=400,
            error_message="The production has no input file.",
            form_errors={"input_file": ["Upload a file or give a URL first."]},
        )
    with emu.lock:
        emu.jobs[production["uuid"]] = production
    if start:
        begin(emu, production)
    return envelope(public(production, request))


@api
def simple_productions(request: HttpRequest, emu: Emulator, user: str) -> HttpResponse:
    """Create (and start) a production in one multipart request (seed, "Simple API")."""
    if request.method != "POST":
        return not_allowed(request, "POST")
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return envelope(status=400, error_message="Send multipart/form-data.")
    form = request.POST
    body: dict[str, Any] = {}
    for key in ("preset", "service", "webhook", "output_basename"):
        if form.get(key):
            body[key] = form[key]
    metadata: dict[str, Any] = {k: form[k] for k in METADATA_FIELDS if form.get(k)}
    if "tags" in metadata:
        metadata["tags"] = [t.strip() for t in metadata["tags"].split(",") if t.strip()]
    if "append_chapters" in metadata:
        metadata["append_chapters"] = metadata["append_chapters"].lower() == "true"
    if metadata:
        body["metadata"] = metadata
    algorithms: dict[str, Any] = {}
    for key in TOGGLES | SETTINGS:
        if key in form:
            value = form[key].strip()
            algorithms[key] = value.lower() == "true" if key in TOGGLES else _scalar(value)
    if algorithms:
        body["algorithms"] = algorithms
    if form.get("input_file"):
        body["input_file"] = form["input_file"]
    production = new_production(emu, user)
    errors = apply_fields(emu, production, body)
    if errors:
        return invalid(errors)
    upload = request.FILES.get("input_file")
    if upload is not None:
        store_upload(emu, production, upload)
    if "chapters" in request.FILES:
        production["chapters"] = parse_chapters(request.FILES["chapters"].read().decode())
    action = form.get("action", "save")
    if action not in ("start", "save"):
        return invalid({"action": ["Expected start or save."]})
    return created(request, emu, production, start=action == "start")


def _scalar(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number == int(number) else number


def parse_chapters(text: str) -> list[dict[str, str]]:
    """Parse a chapters text file: `HH:MM:SS[.mmm] Title <url>` per line (seed)."""
    chapters = []
    for line in text.splitlines():
        match = re.match(r"^(\d{1,2}:\d{2}:\d{2}(?:\.\d{1,3})?)\s+(.*?)(?:\s+<(.+)>)?\s*$", line)
        if match:
            chapter = {"start": match[1], "title": match[2]}
            if match[3]:
                chapter["url"] = match[3]
            chapters.append(chapter)
    return chapters


@api
def production_detail(request: HttpRequest, emu: Emulator, user: str, uuid: str) -> HttpResponse:
    """GET the production, POST (JSON) to change it, DELETE to remove it (seed)."""
    production = owned(emu, user, uuid)
    if production is None:
        return not_found(uuid)
    if request.method == "GET":
        return envelope(public(production, request))
    if request.method == "DELETE":
        with emu.lock:
            production["_stop"] = True
            emu.jobs.pop(uuid, None)
        return envelope({})
    if request.method != "POST":
        return not_allowed(request, "GET, POST, DELETE")
    if production["status"] in BUSY:
        return envelope(status=400, error_message="The production is being processed.")
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return envelope(status=400, error_message="Invalid JSON data.")
    if not isinstance(body, dict):
        return envelope(status=400, error_message="Expected a JSON object.")
    errors = apply_fields(emu, production, body)
    if errors:
        return invalid(errors)
    return envelope(public(production, request))


@api
def upload(request: HttpRequest, emu: Emulator, user: str, uuid: str) -> HttpResponse:
    """Take the production's input file (multipart `input_file`, seed step 2)."""
    if request.method != "POST":
        return not_allowed(request, "POST")
    production = owned(emu, user, uuid)
    if production is None:
        return not_found(uuid)
    if request.content_type != "multipart/form-data":
        return envelope(status=400, error_message="Upload files as multipart/form-data.")
    if production["status"] in BUSY:
        return envelope(status=400, error_message="The production is being processed.")
    upload_file = request.FILES.get("input_file")
    if upload_file is None:
        return invalid({"input_file": ["This field is required."]})
    store_upload(emu, production, upload_file)
    return envelope(public(production, request))


def store_upload(emu: Emulator, production: dict[str, Any], upload_file) -> None:
    """Keep an uploaded input under the production's directory."""
    name = Path(upload_file.name or "input").name or "input"
    folder = emu.job_dir(production["uuid"]) / "input"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    dest = folder / name
    with dest.open("wb") as out:
        for chunk in upload_file.chunks():
            out.write(chunk)
    with emu.lock:
        production.update(input_file=name, _input_path=str(dest), start_allowed=True)
        if production["status"] in (9, 10):
            production.update(status=10, status_string=STATUS_STRINGS[10])


@api
def start(request: HttpRequest, emu: Emulator, user: str, uuid: str) -> HttpResponse:
    """Start the audio post production (seed step 3)."""
    if request.method != "POST":
        return not_allowed(request, "POST")
    production = owned(emu, user, uuid)
    if production is None:
        return not_found(uuid)
    refused = begin(emu, production)
    return refused or envelope(public(production, request))


def begin(emu: Emulator, production: dict[str, Any]) -> JsonResponse | None:
    """Start processing in the background, or say why not."""
    with emu.lock:
        if production["status"] in BUSY:
            return envelope(status=400, error_message="The production is already being processed.")
        if not has_input(production):
            return envelope(
                status=400,
                error_message="The production has no input file.",
                form_errors={"input_file": ["Upload a file or give a URL first."]},
            )
        production["_run"] += 1
        run = production["_run"]
        production.update(
            _stop=False,
            _stalled=False,
            _results={},
            error_message="",
            statistics={},
            status=1,
            status_string=STATUS_STRINGS[1],
        )
    in_background(lambda: process(emu, production, run), production["uuid"])
    return None


@api
def stop(request: HttpRequest, emu: Emulator, user: str, uuid: str) -> HttpResponse:
    """Stop a running production (seed, "Update and Delete Resources")."""
    if request.method != "POST":
        return not_allowed(request, "POST")
    production = owned(emu, user, uuid)
    if production is None:
        return not_found(uuid)
    with emu.lock:
        if production["status"] in BUSY:
            # A stalled production has no worker left to notice: it stops at once.
            status_now = 10 if production["_stalled"] else 13
            production.update(
                _stop=True, status=status_now, status_string=STATUS_STRINGS[status_now]
            )
    return envelope(public(production, request))


@api
def status(request: HttpRequest, emu: Emulator, user: str, uuid: str) -> HttpResponse:
    """Return the production's status code and words."""
    if request.method != "GET":
        return not_allowed(request, "GET")
    production = owned(emu, user, uuid)
    if production is None:
        return not_found(uuid)
    if emu.take_unknown_status():
        code, words = UNKNOWN_STATUS
        return envelope({"status": code, "status_string": words})
    with emu.lock:
        return envelope(
            {"status": production["status"], "status_string": production["status_string"]}
        )


@api
def user_info(request: HttpRequest, emu: Emulator, user: str) -> HttpResponse:
    """Return the account the credentials belong to (providers.md: identity)."""
    if request.method != "GET":
        return not_allowed(request, "GET")
    return envelope(
        {
            "username": user,
            "email": f"{user}@sandbox.invalid",
            "user_id": hashlib.sha256(user.encode()).hexdigest()[:22],
            "credits": 10.0,
            "onetime_credits": 0.0,
            "recurring_credits": 10.0,
        }
    )


@api
def download(
    request: HttpRequest, emu: Emulator, user: str, uuid: str, filename: str
) -> HttpResponse:
    """Redirect to a short-lived URL of a result file, as Auphonic does (follow with -L)."""
    if request.method != "GET":
        return not_allowed(request, "GET")
    production = owned(emu, user, uuid)
    if production is None or filename not in production["_results"]:
        return envelope(status=404, error_message="File not found.", error_code="not_found")
    expires = int(time.time()) + FILE_URL_SECONDS
    query = urlencode({"expires": expires, "signature": signature(emu, uuid, filename, expires)})
    return HttpResponseRedirect(f"/sandbox/{KIND}/files/{uuid}/{filename}?{query}")


def signature(emu: Emulator, uuid: str, filename: str, expires: int) -> str:
    with emu.lock:
        key = emu.extra.setdefault("file_key", secrets.token_bytes(32))
    return hmac.new(key, f"{uuid}/{filename}:{expires}".encode(), hashlib.sha256).hexdigest()


@sandbox_view(KIND, knobs=False)
def signed_file(request: HttpRequest, emu: Emulator, uuid: str, filename: str) -> HttpResponse:
    """Serve a result file to whoever holds its signed URL (the CDN side of a download)."""
    try:
        expires = int(request.GET.get("expires", "0"))
    except ValueError:
        expires = 0
    given = request.GET.get("signature", "")
    if expires < time.time() or not hmac.compare_digest(
        given, signature(emu, uuid, filename, expires)
    ):
        return HttpResponse("Forbidden", status=403, content_type="text/plain")
    with emu.lock:
        production = emu.jobs.get(uuid)
        found = production["_results"].get(filename) if production else None
    if not found or not Path(found).is_file():
        return HttpResponse("Not found", status=404, content_type="text/plain")
    return FileResponse(Path(found).open("rb"), as_attachment=True, filename=filename)


# --- processing --------------------------------------------------------------------------


def process(emu: Emulator, production: dict[str, Any], run: int) -> None:
    """Render the production with the built-in engine; end in Done or Error; call the webhook."""
    uuid = production["uuid"]

    def superseded() -> bool:
        """Return True when the production was deleted or started again since this run."""
        with emu.lock:
            return production["_run"] != run or uuid not in emu.jobs

    def current() -> bool:
        with emu.lock:
            return not production["_stop"] and not superseded()

    knobs = emu.knobs
    if knobs.stall:
        set_status(emu, production, 4, _stalled=True)
        return  # never moves again
    try:
        input_path = fetch_input(emu, production)
        set_status(emu, production, 4)
        deadline = time.monotonic() + float(knobs.processing_delay or 0)
        while time.monotonic() < deadline and current():
            time.sleep(0.05)
        if not current():
            raise engine.EngineCancelled("stopped")
        if knobs.fail_jobs:
            raise engine.EngineError(knobs.fail_jobs)
        outputs = render(emu, production, input_path, current)
        if not current():
            raise engine.EngineCancelled("stopped")
    except engine.EngineCancelled:
        if not superseded():
            # Stopped: ready to be started again (unconfirmed what Auphonic shows here).
            set_status(emu, production, 10)
        return
    except engine.EngineError as exc:
        if not superseded():
            set_status(emu, production, 2, error_message=str(exc), error_status="processing")
            finish(emu, production)
        return
    except Exception as exc:
        # A crash must not leave the production "processing" forever: Auphonic would say Error.
        log.exception("sandbox production %s crashed", uuid)
        if not superseded():
            message = f"Internal error while processing ({exc.__class__.__name__})."
            set_status(emu, production, 2, error_message=message, error_status="internal")
            finish(emu, production)
        return
    set_status(emu, production, 3, **outputs)
    finish(emu, production)


def finish(emu: Emulator, production: dict[str, Any]) -> None:
    """Call the production's webhook: form-encoded uuid, status, status_string (seed)."""
    if production.get("webhook"):
        send_webhook(
            emu,
            production["webhook"],
            data={
                "uuid": production["uuid"],
                "status": str(production["status"]),
                "status_string": production["status_string"],
            },
        )


def fetch_input(emu: Emulator, production: dict[str, Any]) -> Path:
    """Return the input file, fetching it first when the production names a URL."""
    if production["_input_path"]:
        return Path(production["_input_path"])
    url = production["input_file"]
    set_status(emu, production, 12)
    if not fetchable(url):
        raise engine.EngineError(
            "The sandbox fetches input files only from the portal's own storage."
        )
    folder = emu.job_dir(production["uuid"]) / "input"
    folder.mkdir(exist_ok=True)
    dest = folder / (Path(urlsplit(url).path).name or "input")
    try:
        with requests.get(url, stream=True, timeout=(10, 120)) as response:
            response.raise_for_status()
            with dest.open("wb") as out:
                for chunk in response.iter_content(1024 * 1024):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise engine.EngineError(
            f"Could not download the input file ({exc.__class__.__name__})."
        ) from exc
    with emu.lock:
        production["_input_path"] = str(dest)
    return dest


def fetchable(url: str) -> bool:
    """Return True for a URL on the portal's storage (its S3 endpoint, or AWS S3 itself)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    options = settings.STORAGES.get("default", {}).get("OPTIONS", {})
    endpoint = options.get("endpoint_url") or ""
    if endpoint and urlsplit(endpoint).netloc == parts.netloc:
        return True
    return parts.hostname.endswith(".amazonaws.com")


def render(emu: Emulator, production: dict[str, Any], input_path: Path, current) -> dict:
    """Run the engine on the production's settings; return the fields of a Done production."""
    preset = PRESETS.get(production["preset"] or "", {})
    algorithms = {
        **DEFAULT_ALGORITHMS,
        **preset.get("algorithms", {}),
        **production["algorithms"],
    }
    specs = production["output_files"] or [
        {"format": o["format"], "bitrate": o.get("bitrate"), "suffix": "", "ending": ""}
        for o in preset.get("output_files", [{"format": "mp3"}])
    ]
    audio = [s for s in specs if s["format"] in FORMATS]
    texts = [s for s in specs if s["format"] in TEXT_FORMATS]
    basename = production["output_basename"] or input_path.stem
    params = engine_params(algorithms, audio)
    out_dir = emu.job_dir(production["uuid"]) / "results"
    out_dir.mkdir(exist_ok=True)

    def progress(fraction: float, stage: str) -> bool:
        if stage == "encoding" and production["status"] == 4:
            set_status(emu, production, 5)
        return current()

    result = engine.process(input_path, params, out_dir, basename=basename, progress=progress)
    metadata = {**preset.get("metadata", {}), **production["metadata"]}
    # The engine reads a cover from a local path; Auphonic's cover is an upload: never a path.
    metadata.pop("cover_image", None)
    try:
        chapters = engine_chapters.parse_chapters(production["chapters"] or None)
    except ValueError as exc:
        raise engine.EngineError(str(exc)) from exc
    results: dict[str, str] = {}
    files = []
    for spec, output in zip(audio, result.outputs, strict=True):
        # Auphonic writes the metadata and chapter marks into every result file.
        engine_tags.write_tags(output.path, output.format, metadata, chapters)
        results[output.filename] = str(output.path)
        files.append(
            {
                **spec,
                "filename": output.filename,
                "bitrate": spec.get("bitrate") or _bitrate(output.format),
                "size": output.path.stat().st_size,
                "size_string": f"{output.path.stat().st_size / 1e6:.1f} MB",
                "checksum": md5(output.path),
            }
        )
    stats = result.statistics
    length = float(stats["input"].get("duration") or 0.0)
    if texts:
        set_status(emu, production, 14)
        for spec in texts:
            ending = spec.get("ending") or TEXT_FORMATS[spec["format"]]
            name = spec.get("filename") or f"{basename}{spec.get('suffix') or ''}.{ending}"
            dest = out_dir / Path(name).name
            dest.write_text(transcript_text(production, length, ending), encoding="utf-8")
            results[dest.name] = str(dest)
            files.append(
                {
                    **spec,
                    "filename": dest.name,
                    "ending": ending,
                    "size": dest.stat().st_size,
                    "size_string": f"{dest.stat().st_size / 1e3:.1f} kB",
                    "checksum": md5(dest),
                }
            )
    hours = length / 3600
    return {
        "output_files": files,
        "_results": results,
        "algorithms": {k: v for k, v in algorithms.items() if k != "hipfilter"},
        "length": round(length, 3),
        "length_timestring": time.strftime("%H:%M:%S", time.gmtime(length)),
        "used_credits": {"recurring": round(hours, 4), "onetime": 0.0, "combined": round(hours, 4)},
        "statistics": {
            "levels": {
                "input": levels(stats["input"]),
                "output": {**levels(stats["output"]), "gain_mean": [stats.get("gain"), "dB"]},
            }
        },
        "warning_message": " ".join(stats.get("warnings") or []),
    }


def engine_params(algorithms: dict[str, Any], audio: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the engine's params for a production: the same Auphonic names, minus what it lacks.

    The engine grows; what it refuses (a model-based algorithm, an option it has not learnt)
    is left out, as a stand-in for Auphonic's own processing. A format it cannot write at all
    ends the production in Error.
    """
    outputs = []
    for spec in audio:
        fmt = spec["format"]
        if fmt not in engine.FORMATS:
            fmt = FALLBACKS.get(fmt, fmt)
        if fmt not in engine.FORMATS:
            raise engine.EngineError(f"The sandbox cannot render {spec['format']} outputs.")
        option = {"format": fmt}
        for key in ("bitrate", "filename", "suffix", "mono_mixdown", "ending"):
            if spec.get(key) not in (None, "", False):
                option[key] = spec[key]
        outputs.append(option)
    params = {
        "algorithms": {k: v for k, v in algorithms.items() if k in TOGGLES | SETTINGS},
        "output_files": outputs,
    }
    while True:
        try:
            engine.validate_params(params)
            return params
        except engine.ParamsError as exc:
            dropped = False
            for key in exc.errors:
                found = re.fullmatch(r"algorithms\.(\w+)", key)
                if found and params["algorithms"].pop(found[1], None) is not None:
                    dropped = True
                found = re.fullmatch(r"output_files\[(\d+)\]\.(\w+)", key)
                if found and found[2] != "format":
                    dropped |= outputs[int(found[1])].pop(found[2], None) is not None
            if not dropped:
                raise


def levels(measured: dict[str, Any]) -> dict[str, list[Any]]:
    """Return engine loudness figures as Auphonic's `[value, unit]` pairs."""
    pairs = {
        "loudness": [measured.get("integrated"), "LUFS"],
        "lra": [measured.get("lra"), "LU"],
        "peak": [measured.get("true_peak"), "dBTP"],
    }
    for name, unit in (
        ("max_momentary", "LUFS"),
        ("max_shortterm", "LUFS"),
        ("noise_level", "dB"),
        ("snr", "dB"),
    ):
        if measured.get(name) is not None:
            pairs[name] = [measured[name], unit]
    return pairs


def _bitrate(fmt: str) -> int | None:
    spec = engine.FORMATS.get(fmt)
    return spec.default_bitrate if spec else None


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def transcript_text(production: dict[str, Any], length: float, ending: str) -> str:
    """Return a stand-in speech recognition result (the sandbox recognises no words)."""
    language = (production["speech_recognition"] or {}).get("language", "en")
    text = "[sandbox transcript: speech recognition is not emulated]"
    if ending == "json":
        return json.dumps(
            {
                "language": language,
                "text": text,
                "segments": [{"start": 0.0, "end": round(length, 3), "text": text}],
            }
        )
    if ending in ("srt", "vtt"):
        end = time.strftime("%H:%M:%S", time.gmtime(length))
        sep = "," if ending == "srt" else "."
        head = "WEBVTT\n\n" if ending == "vtt" else "1\n"
        return f"{head}00:00:00{sep}000 --> {end}{sep}000\n{text}\n"
    return text


# --- OAuth2 (seed, "Authentication": authorization-code flow) ------------------------------


def registered_app() -> tuple[str, str]:
    """Return the one OAuth2 app registered with the sandbox (the portal's own)."""
    return settings.AUPHONIC_CLIENT_ID, settings.AUPHONIC_CLIENT_SECRET


@sandbox_view(KIND, knobs=False)
def authorize(request: HttpRequest, emu: Emulator) -> HttpResponse:
    """Approve at once (the user says yes) and send the browser back with a code."""
    client_id = request.GET.get("client_id", "")
    redirect_uri = request.GET.get("redirect_uri", "")
    state = request.GET.get("state", "")
    if not client_id or client_id != registered_app()[0]:
        return HttpResponse("Unknown client_id.", status=400, content_type="text/plain")
    if urlsplit(redirect_uri).scheme not in ("http", "https"):
        return HttpResponse("Invalid redirect_uri.", status=400, content_type="text/plain")
    back: dict[str, str] = {}
    if request.GET.get("response_type") != "code":
        back = {"error": "unsupported_response_type"}
    elif emu.extra.get("oauth_deny") or request.GET.get("simulate") == "access_denied":
        back = {"error": "access_denied", "error_description": "The user denied access."}
    else:
        code = secrets.token_urlsafe(24)
        with emu.lock:
            emu.extra.setdefault("codes", {})[code] = {
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "expires": time.time() + CODE_SECONDS,
            }
        back = {"code": code}
    if state:
        back["state"] = state
    joiner = "&" if urlsplit(redirect_uri).query else "?"
    return HttpResponseRedirect(f"{redirect_uri}{joiner}{urlencode(back)}")


def oauth_error(error: str, status: int = 400, description: str = "") -> JsonResponse:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return JsonResponse(body, status=status)


@sandbox_view(KIND)
def token(request: HttpRequest, emu: Emulator) -> HttpResponse:
    """Exchange a code (or a refresh token) for an access token."""
    if request.method != "POST":
        return oauth_error("invalid_request", 405, "POST only.")
    form = request.POST
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic" and not client_secret:
        try:
            client_id, _, client_secret = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return oauth_error("invalid_client", 401)
    app_id, app_secret = registered_app()
    if not (
        client_id
        and hmac.compare_digest(client_id, app_id)
        and hmac.compare_digest(client_secret, app_secret)
    ):
        return oauth_error("invalid_client", 401, "Client authentication failed.")
    grant = form.get("grant_type", "")
    with emu.lock:
        codes = emu.extra.setdefault("codes", {})
        refreshes = emu.extra.setdefault("refresh_tokens", {})
        if grant == "authorization_code":
            # A code works once, before it expires, for the redirect_uri it was issued to.
            issued = codes.pop(form.get("code", ""), None)
            if (
                issued is None
                or issued["expires"] < time.time()
                or issued["client_id"] != client_id
                or issued["redirect_uri"] != form.get("redirect_uri", "")
            ):
                return oauth_error("invalid_grant", 400, "Invalid or expired code.")
            user = OAUTH_USER
        elif grant == "refresh_token":
            user = refreshes.pop(form.get("refresh_token", ""), None)
            if user is None:
                return oauth_error("invalid_grant", 400, "Invalid refresh token.")
        else:
            return oauth_error("unsupported_grant_type")
        access = TOKEN_PREFIX + secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        emu.extra.setdefault("tokens", {})[access] = {
            "user": user,
            "expires": time.time() + TOKEN_SECONDS,
        }
        refreshes[refresh] = user
    return JsonResponse(
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": TOKEN_SECONDS,
            "refresh_token": refresh,
            "scope": "read write",
        }
    )


urlpatterns = [
    path("api/productions.json", productions),
    path("api/simple/productions.json", simple_productions),
    path("api/production/<str:uuid>.json", production_detail),
    path("api/production/<str:uuid>/upload.json", upload),
    path("api/production/<str:uuid>/start.json", start),
    path("api/production/<str:uuid>/stop.json", stop),
    path("api/production/<str:uuid>/status.json", status),
    path("api/user.json", user_info),
    path("api/download/audio-result/<str:uuid>/<str:filename>", download),
    path("files/<str:uuid>/<str:filename>", signed_file),
    path("oauth2/authorize/", authorize),
    path("oauth2/token/", token),
]
