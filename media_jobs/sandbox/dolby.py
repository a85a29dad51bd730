"""Emulator of the Dolby.io Media APIs: token, dlb:// storage, jobs, callbacks, real processing.

Follows ../shared/providers.md ("Dolby.io Media") and seeds/dolby-media-apis.txt. Mounted at
/sandbox/dolby/: the token endpoint is v1/auth/token, the API lives under media/, and the
presigned storage links point at _storage/ on this same server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import requests
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import path, re_path

from media_jobs import engine
from media_jobs.sandbox.base import Emulator, bearer, in_background, send_webhook
from media_jobs.sandbox.base import sandbox_view as _sandbox_view

KIND = "dolby"
API_VERSION = "v1.1.2"
DEFAULT_TOKEN_SECONDS = 1800  # contract: expires_in defaults to 1800 s
MAX_TOKEN_SECONDS = 86400
LINK_SECONDS = 3600
OPERATIONS = ("enhance", "analyze", "analyze/speech", "diagnose", "transcode")
CONTENT_TYPES = {
    "conference",
    "interview",
    "lecture",
    "meeting",
    "mobile_phone",
    "music",
    "podcast",
    "studio",
    "voice_over",
    "voice_recording",
}
NOISE_AMOUNTS = {"auto", "low", "medium", "high", "max"}
# Output extensions the emulator can write, and the engine format behind each. The engine
# writes audio only: an .mp4 output carries the enhanced audio track without video.
ENGINE_FORMATS = {
    "wav": "wav",
    "mp3": "mp3",
    "m4a": "aac",
    "mp4": "aac",
    "aac": "aac",
    "flac": "flac",
    "ogg": "opus",
    "opus": "opus",
}
# Dolby leaves the loudness target to the content type when none is given; podcasts (and
# our default) aim at -16 LUFS. The built-in engine covers -31..-13 LUFS, so louder targets
# (music masters at -8) are rendered at -13.
DEFAULT_TARGET = -16.0
TARGET_RANGE = (-31.0, -5.0)
ENGINE_TARGET_RANGE = (-31.0, -13.0)
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,500}$")
# What an undocumented status word looks like (the unknown_status knob).
UNKNOWN_STATUS = "Preparing"


def sandbox_view(**kwargs):
    return _sandbox_view(KIND, **kwargs)


# --- answers --------------------------------------------------------------------------------


def problem(status: int, kind: str, title: str, detail: str) -> JsonResponse:
    """Answer with Dolby's error shape {type, status, title, detail} (contract)."""
    return JsonResponse(
        {"type": f"/problems/{kind}", "status": status, "title": title, "detail": detail},
        status=status,
    )


def invalid(detail: str) -> JsonResponse:
    return problem(400, "validation-error", "Your request is invalid", detail)


def oauth_error(status: int, code: str, description: str) -> JsonResponse:
    """Answer a token request with the OAuth2 error shape (RFC 6749 section 5.2)."""
    return JsonResponse({"error": code, "error_description": description}, status=status)


def now_iso(at: float | None = None) -> str:
    when = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- authentication -------------------------------------------------------------------------


def app_refused(app_key: str, app_secret: str) -> bool:
    """Return whether the sandbox refuses these app credentials (empty, or "bad..." keys)."""
    return not app_key or not app_secret or app_key.startswith("bad")


def tokens(emu: Emulator) -> dict[str, dict[str, Any]]:
    return emu.extra.setdefault("tokens", {})


@sandbox_view()
def token(request: HttpRequest, emu: Emulator) -> HttpResponse:
    """POST /v1/auth/token: client credentials in HTTP Basic, a Bearer token out (contract)."""
    if request.method != "POST":
        return oauth_error(405, "invalid_request", "Use POST.")
    if request.content_type != "application/x-www-form-urlencoded":
        return oauth_error(400, "invalid_request", "Send a form (x-www-form-urlencoded).")
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return oauth_error(401, "invalid_client", "HTTP Basic app key and secret required.")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return oauth_error(401, "invalid_client", "Malformed Basic credentials.")
    key, _, secret = decoded.partition(":")
    # OAuth2 clients form-encode the key and secret inside Basic (RFC 6749 section 2.3.1).
    app_key, app_secret = unquote(key), unquote(secret)
    if app_refused(app_key, app_secret) or emu.knobs.expire_tokens:
        return oauth_error(401, "invalid_client", "Invalid app key or secret.")
    if request.POST.get("grant_type") != "client_credentials":
        return oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials.")
    lifetime = DEFAULT_TOKEN_SECONDS
    if request.POST.get("expires_in"):
        try:
            lifetime = int(request.POST["expires_in"])
        except ValueError:
            lifetime = 0
        if not 1 <= lifetime <= MAX_TOKEN_SECONDS:
            return oauth_error(
                400, "invalid_request", f"expires_in must be 1..{MAX_TOKEN_SECONDS} seconds."
            )
    access = emu.new_id(48)
    with emu.lock:
        tokens(emu)[access] = {"app": app_key, "expires": time.time() + lifetime}
    return JsonResponse({"token_type": "Bearer", "access_token": access, "expires_in": lifetime})


def authenticate(request: HttpRequest, emu: Emulator) -> tuple[str, HttpResponse | None]:
    """Return the app behind the request's Bearer token, or a 401 answer."""
    access = bearer(request)
    if not access:
        return "", problem(
            401, "unauthorized", "Unauthorized", "A Bearer access token is required."
        )
    with emu.lock:
        record = tokens(emu).get(access)
        refused = emu.knobs.expire_tokens
    if refused or record is None or record["expires"] < time.time():
        return "", problem(
            401, "unauthorized", "Unauthorized", "The access token is invalid or expired."
        )
    return record["app"], None


def json_body(request: HttpRequest) -> tuple[dict[str, Any], HttpResponse | None]:
    """Return the request's JSON object, or a 415/400 answer."""
    if request.content_type != "application/json":
        return {}, problem(
            415, "unsupported-media-type", "Unsupported Media Type", "Send application/json."
        )
    try:
        body = json.loads(request.body or b"")
    except ValueError:
        return {}, invalid("The body is not valid JSON.")
    if not isinstance(body, dict):
        return {}, invalid("The body must be a JSON object.")
    return body, None


# --- dlb:// storage --------------------------------------------------------------------------


def dlb_key(url: Any) -> str | None:
    """Return the object key of a dlb:// URL, or None when it is not a usable one."""
    if not isinstance(url, str) or not url.startswith("dlb://"):
        return None
    key = url.removeprefix("dlb://")
    if not KEY_RE.match(key) or ".." in key.split("/"):
        return None
    return key


def object_path(emu: Emulator, app: str, key: str) -> Path:
    """Return where an app's dlb:// object lives (keys are unique per app, as Dolby's are)."""
    space = hashlib.sha256(app.encode()).hexdigest()[:16]
    return emu.root / "storage" / space / key


def secret(emu: Emulator) -> bytes:
    with emu.lock:
        return emu.extra.setdefault("secret", emu.new_id(32)).encode()


def signature(emu: Emulator, method: str, stored: str, expires: int) -> str:
    message = f"{method}\n{stored}\n{expires}".encode()
    return hmac.new(secret(emu), message, hashlib.sha256).hexdigest()


def signed_url(request: HttpRequest, emu: Emulator, method: str, app: str, key: str) -> str:
    """Return a presigned-like link to an object on this server, valid for an hour."""
    stored = str(object_path(emu, app, key).relative_to(emu.root / "storage"))
    expires = int(time.time()) + LINK_SECONDS
    query = urlencode(
        {"method": method, "expires": expires, "sig": signature(emu, method, stored, expires)}
    )
    return request.build_absolute_uri(f"/sandbox/{KIND}/_storage/{stored}?{query}")


@sandbox_view()
def storage(request: HttpRequest, emu: Emulator, stored: str) -> HttpResponse:
    """PUT or GET an object through a presigned link (no Bearer: the signature is the key)."""
    method = request.method or ""
    if ".." in stored.split("/"):
        return HttpResponse("NoSuchKey", status=404)
    try:
        expires = int(request.GET.get("expires", ""))
    except ValueError:
        expires = 0
    expected = signature(emu, method, stored, expires)
    if (
        request.GET.get("method") != method
        or not hmac.compare_digest(expected, request.GET.get("sig", ""))
        or expires < time.time()
    ):
        return HttpResponse("Request has expired or its signature does not match.", status=403)
    target = emu.root / "storage" / stored
    if method == "PUT":
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            shutil.copyfileobj(request, out, 1024 * 1024)
        return HttpResponse(status=200)
    if method == "GET":
        if not target.is_file():
            return HttpResponse("NoSuchKey", status=404)
        return FileResponse(target.open("rb"), as_attachment=True, filename=target.name)
    return HttpResponse(status=405)


@sandbox_view()
def media_input(request: HttpRequest, emu: Emulator) -> HttpResponse:
    """POST /media/input {"url": "dlb://in/x.wav"} -> {"url": presigned PUT} (contract)."""
    app, refused = authenticate(request, emu)
    if refused:
        return refused
    if request.method != "POST":
        return problem(405, "method-not-allowed", "Method Not Allowed", "Use POST.")
    body, bad = json_body(request)
    if bad:
        return bad
    key = dlb_key(body.get("url"))
    if key is None:
        return invalid("url must be a dlb:// URL such as dlb://in/example.wav.")
    return JsonResponse({"url": signed_url(request, emu, "PUT", app, key)})


@sandbox_view()
def media_output(request: HttpRequest, emu: Emulator) -> HttpResponse:
    """GET /media/output?url=dlb://out/x.wav -> redirect to a presigned GET (contract)."""
    app, refused = authenticate(request, emu)
    if refused:
        return refused
    if request.method != "GET":
        return problem(405, "method-not-allowed", "Method Not Allowed", "Use GET.")
    key = dlb_key(request.GET.get("url"))
    if key is None:
        return invalid("url must be a dlb:// URL.")
    if not object_path(emu, app, key).is_file():
        return problem(404, "not-found", "Not Found", f"dlb://{key} does not exist.")
    return HttpResponseRedirect(signed_url(request, emu, "GET", app, key))


# --- jobs -----------------------------------------------------------------------------------


def status_body(job: dict[str, Any]) -> dict[str, Any]:
    """Return a job as GET /media/<operation>?job_id= shows it (contract)."""
    body = {
        "path": job["path"],
        "status": job["status"],
        "progress": job["progress"],
        "api_version": API_VERSION,
        "result": job["result"],
    }
    if job.get("error"):
        body["error"] = job["error"]
    return body


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """Return a job as GET /media/jobs lists it."""
    return {
        "job_id": job["job_id"],
        "api_version": API_VERSION,
        "path": job["path"],
        "status": job["status"],
        "progress": job["progress"],
        "duration": job.get("duration"),
        "time_submitted": now_iso(job["submitted"]),
        "time_started": now_iso(job["started"]) if job.get("started") else None,
        "time_completed": now_iso(job["completed"]) if job.get("completed") else None,
        "expiry": now_iso(job["submitted"] + timedelta(days=31).total_seconds()),
    }


def check_source(app: str, emu: Emulator, value: Any, what: str) -> str | None:
    """Return an error text when a job's input is neither an existing dlb:// object nor a URL."""
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return None
    key = dlb_key(value)
    if key is None:
        return f"{what} must be a dlb:// URL or a readable https URL."
    if not object_path(emu, app, key).is_file():
        return f"{what} dlb://{key} does not exist; upload it with /media/input first."
    return None


def check_destination(value: Any, what: str, *, media: bool) -> str | None:
    """Return an error text when an output location is unusable."""
    if not isinstance(value, str) or not (
        dlb_key(value) or value.startswith(("https://", "http://"))
    ):
        return f"{what} must be a dlb:// URL or a writable https URL."
    if media:
        ext = Path(value.split("?", 1)[0]).suffix.lower().lstrip(".")
        if ext not in ENGINE_FORMATS:
            return f"{what} has an unsupported extension ({ext or 'none'}); use one of " + (
                ", ".join(sorted(ENGINE_FORMATS))
            )
    return None


def section(body: dict[str, Any], *names: str) -> dict[str, Any] | None:
    """Return the object at body[names[0]][names[1]]..., {} when absent, None when not an object."""
    current: Any = body
    for name in names:
        current = current.get(name, {})
        if not isinstance(current, dict):
            return None
    return current


def validate_enhance(body: dict[str, Any]) -> str | None:
    """Return the first problem of an enhance body (contract: content, audio sections)."""
    for names in (
        ("content",),
        ("audio",),
        ("audio", "loudness"),
        ("audio", "noise", "reduction"),
        ("audio", "speech", "isolation"),
    ):
        if section(body, *names) is None:
            return f"{'.'.join(names)} must be an object."
    content_type = section(body, "content").get("type")
    if content_type is not None and content_type not in CONTENT_TYPES:
        return f"content.type must be one of {', '.join(sorted(CONTENT_TYPES))}."
    loudness = section(body, "audio", "loudness")
    if "enable" in loudness and not isinstance(loudness["enable"], bool):
        return "audio.loudness.enable must be true or false."
    if not number_within(loudness.get("target_level"), *TARGET_RANGE):
        return f"audio.loudness.target_level must be {TARGET_RANGE[0]:g}..{TARGET_RANGE[1]:g}."
    reduction = section(body, "audio", "noise", "reduction")
    if "amount" in reduction and reduction["amount"] not in NOISE_AMOUNTS:
        return f"audio.noise.reduction.amount must be one of {', '.join(sorted(NOISE_AMOUNTS))}."
    isolation = section(body, "audio", "speech", "isolation")
    if not number_within(isolation.get("amount"), 0, 100):
        return "audio.speech.isolation.amount must be 0..100."
    return None


def number_within(value: Any, low: float, high: float) -> bool:
    """Return whether an optional JSON number is absent or within low..high."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return low <= value <= high


def normalise_transcode(body: dict[str, Any]) -> tuple[str, str, str | None]:
    """Return (input, output, error) of a transcode body, in either accepted shape."""
    # Dolby's Transcode reference takes inputs[]/outputs[]; the contract leaves the shape
    # unconfirmed, so the plain input/output of the other operations is accepted too.
    if "inputs" in body or "outputs" in body:
        inputs, outputs = body.get("inputs"), body.get("outputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            return "", "", "inputs must hold exactly one {source} object."
        if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
            return "", "", "outputs must hold exactly one {destination, kind} object."
        return inputs[0].get("source", ""), outputs[0].get("destination", ""), None
    return body.get("input", ""), body.get("output", ""), None


def callback_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """Return the one-time callback of a job request ({"url", "headers"}), if any."""
    callback = body.get("callback")
    if isinstance(callback, str):
        return {"url": callback, "headers": {}}
    if isinstance(callback, dict) and isinstance(callback.get("url"), str):
        headers = callback.get("headers") if isinstance(callback.get("headers"), dict) else {}
        return {"url": callback["url"], "headers": headers}
    return None


def start_job(request: HttpRequest, emu: Emulator, app: str, operation: str) -> HttpResponse:
    """POST /media/<operation>: validate, record the job Pending, process it in background."""
    body, bad = json_body(request)
    if bad:
        return bad
    if operation == "transcode":
        source, destination, shape_error = normalise_transcode(body)
        if shape_error:
            return invalid(shape_error)
    else:
        source, destination = body.get("input"), body.get("output")
    error = check_source(app, emu, source, "input")
    if error:
        return invalid(error)
    if operation != "diagnose":
        error = check_destination(
            destination, "output", media=operation in ("enhance", "transcode")
        )
        if error:
            return invalid(error)
    if operation == "enhance":
        error = validate_enhance(body)
        if error:
            return invalid(error)
    job_id = str(uuid.uuid4())
    job = {
        "job_id": job_id,
        "app": app,
        "operation": operation,
        "path": f"/media/{operation}",
        "status": "Pending",
        "progress": 0,
        "result": {},
        "error": None,
        "request": body,
        "input": source,
        "output": destination,
        "callback": callback_of(body),
        "submitted": time.time(),
    }
    with emu.lock:
        emu.jobs[job_id] = job
    in_background(lambda: process_job(emu, job_id), f"{KIND}-{job_id}")
    return JsonResponse({"job_id": job_id})


def job_status(request: HttpRequest, emu: Emulator, app: str, operation: str) -> HttpResponse:
    """GET /media/<operation>?job_id=: the job's status (contract)."""
    job_id = request.GET.get("job_id", "")
    if not job_id:
        return invalid("job_id is required.")
    with emu.lock:
        job = emu.jobs.get(job_id)
        if job is None or job["app"] != app or job["operation"] != operation:
            return problem(404, "not-found", "Not Found", f"No {operation} job {job_id}.")
        body = status_body(job)
    if emu.take_unknown_status():
        body["status"] = UNKNOWN_STATUS
    return JsonResponse(body)


def operation_view(operation: str):
    """Return the POST (start) / GET (status) view of one Media API operation."""

    @sandbox_view()
    def view(request: HttpRequest, emu: Emulator) -> HttpResponse:
        app, refused = authenticate(request, emu)
        if refused:
            return refused
        if request.method == "POST":
            return start_job(request, emu, app, operation)
        if request.method == "GET":
            return job_status(request, emu, app, operation)
        return problem(405, "method-not-allowed", "Method Not Allowed", "Use POST or GET.")

    view.__name__ = f"media_{operation.replace('/', '_')}"
    return view


@sandbox_view()
def jobs_list(request: HttpRequest, emu: Emulator) -> HttpResponse:
    """GET /media/jobs: the app's jobs of the last 31 days, optionally by status."""
    app, refused = authenticate(request, emu)
    if refused:
        return refused
    if request.method != "GET":
        return problem(405, "method-not-allowed", "Method Not Allowed", "Use GET.")
    wanted = request.GET.get("status", "").lower()
    with emu.lock:
        jobs = [
            job_summary(job)
            for job in emu.jobs.values()
            if job["app"] == app and (not wanted or job["status"].lower() == wanted)
        ]
    return JsonResponse({"count": len(jobs), "jobs": jobs})


@sandbox_view()
def jobs_cancel(request: HttpRequest, emu: Emulator) -> HttpResponse:
    """POST /media/jobs/cancel?job_id= with a JSON body {} (contract)."""
    app, refused = authenticate(request, emu)
    if refused:
        return refused
    if request.method != "POST":
        return problem(405, "method-not-allowed", "Method Not Allowed", "Use POST.")
    _, bad = json_body(request)
    if bad:
        return bad
    job_id = request.GET.get("job_id", "")
    with emu.lock:
        job = emu.jobs.get(job_id)
        if job is None or job["app"] != app:
            return problem(404, "not-found", "Not Found", f"No job {job_id}.")
        if job["status"] not in ("Pending", "Running"):
            return invalid(f"Job {job_id} has already ended ({job['status']}).")
        job.update(status="Cancelled", completed=time.time())
        ended = dict(job)
    # A cancelled job has ended too: its callback fires (the webhook "at the end of every job").
    in_background(lambda: notify(emu, ended), f"{KIND}-{job_id}-cancelled")
    return JsonResponse({})


# --- processing -----------------------------------------------------------------------------


class Cancelled(Exception):
    """The job was cancelled (or the emulator reset) while it was processed."""


def update(emu: Emulator, job_id: str, **fields: Any) -> dict[str, Any]:
    """Update a running job; raise Cancelled once it was cancelled or forgotten."""
    with emu.lock:
        job = emu.jobs.get(job_id)
        if job is None or job["status"] == "Cancelled":
            raise Cancelled
        job.update(fields)
        return dict(job)


def progress_to(emu: Emulator, job_id: str, low: int, high: int):
    """Return an engine progress callback mapping its fraction onto low..high percent."""

    def report(fraction: float, _stage: str = "") -> bool:
        percent = int(low + (high - low) * max(0.0, min(1.0, fraction)))
        with emu.lock:
            job = emu.jobs.get(job_id)
            if job is None or job["status"] == "Cancelled":
                return False  # the engine stops (EngineCancelled)
            job["progress"] = max(job["progress"], percent)
        return True

    return report


def process_job(emu: Emulator, job_id: str) -> None:
    """Run a job: Pending -> Running (progress 0..100) -> Success/Failed, then the callback."""
    with emu.lock:
        knobs = emu.knobs
        delay, stall, failure = knobs.processing_delay, knobs.stall, knobs.fail_jobs
    try:
        job = update(emu, job_id, status="Running", progress=0, started=time.time())
        if stall:
            # Stuck for good: Running, never progressing, never finishing.
            update(emu, job_id, progress=10)
            return
        workdir = emu.job_dir(job_id)
        processing_from = 0
        if delay:
            processing_from = 40
            wait(emu, job_id, delay, progress_to(emu, job_id, 0, processing_from))
        if failure:
            finish(emu, job_id, "Failed", error=failed("processing-error", failure))
            return
        source = fetch_input(emu, job, workdir)
        progress = progress_to(emu, job_id, processing_from, 99)
        result = run_operation(emu, job, source, workdir, progress)
        finish(emu, job_id, "Success", result=result)
    except Cancelled:
        return
    except engine.EngineCancelled:
        return
    except Exception as exc:  # the service reports any failure as a Failed job
        try:
            finish(emu, job_id, "Failed", error=failed("media-processing-error", str(exc)))
        except Cancelled:
            return


def wait(emu: Emulator, job_id: str, seconds: float, report) -> None:
    """Stay Running for `seconds`, progressing; stop early if the job is cancelled."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        if not report(elapsed / seconds):
            raise Cancelled
        time.sleep(min(0.1, seconds - elapsed))


def failed(kind: str, detail: str) -> dict[str, str]:
    return {"type": f"/problems/{kind}", "title": "Processing failed", "detail": detail}


def finish(emu: Emulator, job_id: str, status: str, **fields: Any) -> None:
    """End a job and fire its one-time callback with the job status JSON (contract)."""
    progress = 100 if status == "Success" else None
    extra = {"progress": progress} if progress is not None else {}
    notify(emu, update(emu, job_id, status=status, completed=time.time(), **extra, **fields))


def notify(emu: Emulator, job: dict[str, Any]) -> None:
    """POST the job's status JSON to its one-time callback, if it has one."""
    callback = job.get("callback")
    if callback:
        payload = {"job_id": job["job_id"], **status_body(job)}
        send_webhook(emu, callback["url"], json=payload, headers=callback["headers"])


def fetch_input(emu: Emulator, job: dict[str, Any], workdir: Path) -> Path:
    """Return a local file of the job's input: a dlb:// object, or a downloaded URL."""
    source = job["input"]
    key = dlb_key(source)
    if key is not None:
        return object_path(emu, job["app"], key)
    name = Path(source.split("?", 1)[0]).name or "input"
    dest = workdir / f"input-{name}"
    with requests.get(source, stream=True, timeout=(10, 120)) as response:
        response.raise_for_status()
        with dest.open("wb") as out:
            for chunk in response.iter_content(1024 * 1024):
                out.write(chunk)
    return dest


def store_output(emu: Emulator, job: dict[str, Any], produced: Path) -> None:
    """Write a result to the job's output location (dlb:// object or a PUT to a URL)."""
    destination = job["output"]
    key = dlb_key(destination)
    if key is not None:
        target = object_path(emu, job["app"], key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(produced), target)
        return
    with produced.open("rb") as fh:
        requests.put(destination, data=fh, timeout=(10, 120)).raise_for_status()


def run_operation(
    emu: Emulator, job: dict[str, Any], source: Path, workdir: Path, progress
) -> dict[str, Any]:
    """Process the input with the built-in engine; return the job's `result`."""
    operation = job["operation"]
    if operation in ("enhance", "transcode"):
        ext = Path(job["output"].split("?", 1)[0]).suffix.lower().lstrip(".")
        params = engine_params(job["request"], ENGINE_FORMATS[ext], enhance=operation == "enhance")
        done = engine.process(source, params, workdir, basename="result", progress=progress)
        store_output(emu, job, done.outputs[0].path)
        return {}
    loudness = engine.measure(source, progress=progress)
    facts = engine.probe(source)
    if operation == "diagnose":
        # Diagnose answers in the GET response's `result` (seed: "JSON ... Diagnose").
        return diagnose_report(loudness, facts)
    report = (
        speech_report(loudness, facts)
        if operation == "analyze/speech"
        else analyze_report(loudness, facts, source)
    )
    produced = workdir / "result.json"
    produced.write_text(json.dumps(report, indent=2), encoding="utf-8")
    # Analyze writes a JSON data file to `output` (seed: "Data File ... Analyze").
    store_output(emu, job, produced)
    return {}


def engine_params(request: dict[str, Any], fmt: str, *, enhance: bool) -> dict[str, Any]:
    """Translate an enhance request into the engine's parameters (approximations noted)."""
    if not enhance:
        # Transcode changes the format only.
        algorithms: dict[str, Any] = {"filtering": False, "normloudness": False}
    else:
        loudness = section(request, "audio", "loudness") or {}
        target = loudness.get("target_level", DEFAULT_TARGET)
        target = min(max(float(target), ENGINE_TARGET_RANGE[0]), ENGINE_TARGET_RANGE[1])
        # The engine has no denoiser or speech isolation: its 80 Hz high-pass filter stands
        # in for them (and for filter.high_pass), removing rumble as the real ones also do.
        wants_filter = any(
            (section(request, "audio", *names) or {}).get("enable") is True
            for names in (("noise", "reduction"), ("speech", "isolation"), ("filter", "high_pass"))
        )
        algorithms = {
            "filtering": wants_filter,
            # Dolby enables loudness correction unless told otherwise.
            "normloudness": loudness.get("enable", True),
            "loudnesstarget": target,
            "maxpeak": 0,
        }
    return {"algorithms": algorithms, "output_files": [{"format": fmt}]}


def media_info(facts: engine.ProbeResult, source: Path | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"kind": facts.format_name.split(",")[0]}
    container["duration"] = round(facts.duration, 3)
    if source is not None:
        container["size"] = source.stat().st_size
    if facts.bit_rate:
        container["bitrate"] = facts.bit_rate
    return {
        "container": container,
        "audio": {
            "codec": facts.audio_codec,
            "channels": facts.channels,
            "sample_rate": facts.sample_rate,
            "duration": round(facts.duration, 3),
        },
    }


def loudness_fields(loudness: engine.Loudness) -> dict[str, Any]:
    values = loudness.as_dict()
    return {
        "integrated": values["integrated"],
        "range": values["lra"],
        "true_peak": values["true_peak"],
        "gating_mode": "level",
    }


def clipping(loudness: engine.Loudness) -> dict[str, Any]:
    # Approximation: a true peak at or over full scale counts as one clipped section.
    clipped = loudness.true_peak >= 0.0
    return {"num_sections": int(clipped), "sections": []}


def analyze_report(
    loudness: engine.Loudness, facts: engine.ProbeResult, source: Path
) -> dict[str, Any]:
    """Return an Analyze data file: processed_region.audio.* and media_info."""
    return {
        "processed_region": {
            "start": 0,
            "end": round(facts.duration, 3),
            "audio": {"loudness": loudness_fields(loudness), "clipping": clipping(loudness)},
        },
        "media_info": media_info(facts, source),
    }


def speech_report(loudness: engine.Loudness, facts: engine.ProbeResult) -> dict[str, Any]:
    """Return an Analyze Speech data file (approximation: all audible time is speech)."""
    audible = not loudness.is_silent
    duration = round(facts.duration, 3)
    sections = [{"section_id": "sp_1", "start": 0, "duration": duration}] if audible else []
    return {
        "processed_region": {
            "start": 0,
            "end": duration,
            "audio": {
                "speech": {
                    "percentage": 100.0 if audible else 0.0,
                    "num_sections": len(sections),
                    "sections": sections,
                }
            },
        },
        "media_info": media_info(facts),
    }


def diagnose_report(loudness: engine.Loudness, facts: engine.ProbeResult) -> dict[str, Any]:
    """Return a Diagnose result: media_info and audio clipping/loudness/noise findings."""
    values = loudness.as_dict()
    return {
        "media_info": media_info(facts),
        "audio": {
            "clipping": clipping(loudness),
            "loudness": {"integrated": values["integrated"], "true_peak": values["true_peak"]},
            "noise": {"level_average": None, "snr_average": None},
        },
    }


urlpatterns = [
    path("v1/auth/token", token),
    path("media/input", media_input),
    path("media/output", media_output),
    path("media/jobs", jobs_list),
    path("media/jobs/cancel", jobs_cancel),
    *[path(f"media/{operation}", operation_view(operation)) for operation in OPERATIONS],
    re_path(r"^_storage/(?P<stored>[A-Za-z0-9._/-]+)$", storage),
]
