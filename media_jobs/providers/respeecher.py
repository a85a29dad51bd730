"""Respeecher voice marketplace: upload an original, order voice conversions, collect each voice.

Contract: ../shared/providers.md, section "Respeecher", and seeds/respeecher-voice-api.txt
("the seed"). A job is: find or create a project and a folder (both looked up by name through the
documented list endpoints, so every job of an account reuses them), upload the original into the
folder, order one conversion per voice, poll each conversion recording, download each result.
Respeecher is a FastAPI service: errors are `{"detail": "..."}`, validation errors (422) are
`{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`.
"""

from __future__ import annotations

import logging
import re
import subprocess
import unicodedata
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from django.utils.text import slugify

from media_jobs import engine
from media_jobs.providers.base import (
    FAILED,
    RUNNING,
    SUCCESS,
    CredentialField,
    Output,
    Param,
    Provider,
    ProviderError,
    RemoteStatus,
    RunResult,
    validate_declared,
)
from media_jobs.providers.http import TRANSIENT_STATUSES, error_text, upload

if TYPE_CHECKING:
    from media_jobs.models import ProviderAccount
    from media_jobs.providers.context import JobContext
    from media_jobs.providers.http import ProviderClient

log = logging.getLogger(__name__)

LABEL = "Respeecher"
DEFAULT_PROJECT = "Media hub"

# providers.md: a recording label is "at most 40 chars, `[a-zA-Z0-9 -]`".
LABEL_MAX = 40
LABEL_BAD = re.compile(r"[^a-zA-Z0-9 -]+")
# Seed, POST /api/recordings: "the supported audio formats are wav, ogg, mp3 or flac".
UPLOAD_FORMATS = ("wav", "ogg", "mp3", "flac")
# Seed, "Orders": the resulting pitch is the voice's default shift + semitones_correction;
# the brief bounds the correction to an octave either way.
SEMITONES = (-12, 12)
VOICE_KEYS = ("voice_id", "accent_id", "narration_style_id", "semitones_correction")
LIST_PAGE = 100

# Order states (providers.md: new | pre_processing | processing | post_processing | done |
# error), carried on the conversion recording as `process_stage` -> public progress. Respeecher
# gives no percentage, so each documented stage stands for a fixed share.
STAGE_PROGRESS = {
    "new": 10,
    "pre_processing": 25,
    "processing": 50,
    "post_processing": 80,
    "done": 95,
}
# Recording states (providers.md: done | processing | error).
DONE, ERROR = "done", "error"


class RespeecherProvider(Provider):
    kind = "respeecher"
    label = LABEL
    auth_kinds = ("api_key",)
    # providers.md: "No cancel, no webhook." A failed order can be retried
    # (POST /api/v2/orders/retry/{id}); the MVP fails the job instead and a new job reorders.
    can_cancel = False
    has_webhooks = False
    parameters = (
        Param(
            "voices",
            list,
            "Voices",
            help=(
                "One entry per target voice: {voice_id, accent_id?, narration_style_id?, "
                "semitones_correction? (-12..12)}, or just the voice id; ids come from "
                "GET /api/v2/voices. Each voice gives one output file."
            ),
            required=True,
        ),
        Param(
            "project_name",
            str,
            "Project",
            help="The Respeecher project that holds the uploads (found by name, else created).",
            default=DEFAULT_PROJECT,
        ),
        Param(
            "folder_name",
            str,
            "Folder",
            help="The folder in the project (found by name, else created); default: the "
            "workspace's slug.",
        ),
        Param(
            "label",
            str,
            "Recording label",
            help="Label of the uploaded original; default: the item's title. Trimmed to 40 "
            "letters, digits, spaces and hyphens.",
        ),
        Param(
            "calibration_id",
            str,
            "Calibration ID",
            help="A calibration of your voice to use (with use_calibration).",
        ),
        Param(
            "use_calibration",
            bool,
            "Use that calibration",
            help="On: use calibration_id. Off: the account's enabled calibration.",
        ),
    )
    credential_fields = (CredentialField("api_key", "API key", secret=True),)

    # --- presets -------------------------------------------------------------------------

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return normalised parameters; check each voice entry as the order endpoint would."""
        clean = validate_declared(self.parameters, params)
        errors: list[str] = []
        voices = clean["voices"]
        if not voices:
            errors.append("voices: give at least one voice")
        normalised = []
        for n, entry in enumerate(voices):
            where = f"voices[{n}]"
            if isinstance(entry, str):
                entry = {"voice_id": entry}
            if not isinstance(entry, dict):
                errors.append(f"{where}: expected an object with a voice_id")
                continue
            unknown = sorted(set(entry) - set(VOICE_KEYS))
            if unknown:
                errors.append(f"{where}: unknown keys {', '.join(unknown)}")
            voice: dict[str, Any] = {}
            for key in ("voice_id", "accent_id", "narration_style_id"):
                value = entry.get(key)
                if value in (None, ""):
                    if key == "voice_id":
                        errors.append(f"{where}.voice_id: required")
                    continue
                # Seed: every id is a UUID; a typo is caught here rather than by a 422 later.
                try:
                    voice[key] = str(uuid.UUID(str(value)))
                except ValueError:
                    errors.append(f"{where}.{key}: {value!r} is not a Respeecher id (a UUID)")
            shift = entry.get("semitones_correction")
            if shift not in (None, ""):
                if isinstance(shift, bool) or not isinstance(shift, int | float | str):
                    errors.append(f"{where}.semitones_correction: expected a whole number")
                else:
                    try:
                        number = float(shift)
                    except ValueError:
                        number = float("nan")
                    if not number.is_integer():
                        errors.append(f"{where}.semitones_correction: expected a whole number")
                    elif not SEMITONES[0] <= number <= SEMITONES[1]:
                        errors.append(
                            f"{where}.semitones_correction: {int(number)} is outside "
                            f"{SEMITONES[0]}..{SEMITONES[1]}"
                        )
                    else:
                        voice["semitones_correction"] = int(number)
            normalised.append(voice)
        clean["voices"] = normalised
        if clean.get("calibration_id"):
            try:
                clean["calibration_id"] = str(uuid.UUID(clean["calibration_id"]))
            except ValueError:
                errors.append("calibration_id: not a Respeecher id (a UUID)")
        if clean.get("use_calibration") and not clean.get("calibration_id"):
            # Seed: "set this to true and specify the calibration_id".
            errors.append("use_calibration: needs a calibration_id")
        for key in ("project_name", "folder_name"):
            if key in clean:
                clean[key] = clean[key].strip()[:100]
        if errors:
            raise ValueError("; ".join(errors))
        return clean

    # --- accounts ------------------------------------------------------------------------

    def auth_headers(self, account: ProviderAccount) -> dict[str, str]:
        # providers.md: "Auth header `api-key: <key>`".
        return {"api-key": account.credentials.get("api_key", "")}

    def check_account(self, client: ProviderClient) -> str:
        """List one voice (GET /api/v2/voices): cheap, authenticated, and says what is on offer."""
        # The seed documents no "who am I" endpoint for API keys (only /api/login's answer
        # carries the user), so the identity is the key and the size of its voice catalogue.
        body = client.json("GET", "api/v2/voices", params={"limit": 1})
        count = (body.get("pagination") or {}).get("count") if isinstance(body, dict) else None
        return f"{LABEL} API key ({count} voices)" if count is not None else f"{LABEL} API key"

    def classify_response(self, response: requests.Response) -> ProviderError | None:
        """Classify an error answer (providers.md, "Respeecher": errors and status codes)."""
        status = response.status_code
        if status in TRANSIENT_STATUSES:
            # 408/425/429/5xx: the default transient error, honouring Retry-After.
            return None
        detail = detail_text(response)
        if status == 401:
            # "Not authenticated" or a refused key: the account must be reconnected.
            return ProviderError(
                f"{LABEL} refused the API key (401: {detail}). Reconnect the account.", auth=True
            )
        if status == 403:
            # FastAPI's API-key guard answers a missing or refused key with 403 "Not
            # authenticated" in many versions: that is the key. Any other 403 refuses this
            # request only (a voice the plan does not include), so the account stays enabled.
            if re.search(r"authenticat|api[-_ ]?key|credential|token", detail, re.I):
                return ProviderError(
                    f"{LABEL} refused the API key (403: {detail}). Reconnect the account.",
                    auth=True,
                )
            return ProviderError(
                f"{LABEL} does not allow this request (403: {detail}).", permanent=True
            )
        if status == 402:
            # providers.md: "Login can return 402": payment required. Retrying cannot help until
            # someone buys credits or a plan, so fail now and say what to do.
            return ProviderError(
                f"{LABEL} needs payment: the account is out of credits or its plan does not "
                f"cover this (402: {detail}). Top up the Respeecher account, then run the job "
                "again.",
                permanent=True,
            )
        if status == 422:
            # FastAPI validation: the request itself is wrong; the same request fails again.
            return ProviderError(f"{LABEL} rejected the request (422: {detail}).", permanent=True)
        if status == 404:
            # A project, folder or recording that is gone, or is not this account's.
            return ProviderError(f"{LABEL} could not find it (404: {detail}).", permanent=True)
        # Every other 4xx (400 bad audio, 409, 413, 415 ...) refuses this request for good.
        return ProviderError(f"{LABEL} rejected the request ({status}: {detail}).", permanent=True)

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, ctx: JobContext) -> str:
        """Find the folder, upload the original, order the conversions (each step resumable)."""
        if ctx.remote_id:
            # The order exists: never order again. Rebuild the conversion list if the worker
            # died between saving the order id and saving the list.
            self.conversions(ctx)
            return ctx.remote_id
        folder_id = self.folder(ctx)
        original_id = ctx.state.get("original_id") or self.upload(ctx, folder_id)
        adopted = self.adopt_order(ctx, original_id)
        if adopted:
            return adopted
        voices = ctx.params["voices"]
        body: dict[str, Any] = {
            "original_id": original_id,
            "conversions": [{k: v[k] for k in VOICE_KEYS if k in v} for v in voices],
        }
        if ctx.params.get("calibration_id"):
            body["calibration_id"] = ctx.params["calibration_id"]
        if ctx.params.get("use_calibration") is not None:
            body["use_calibration"] = ctx.params["use_calibration"]
        # Remember that an order may exist from here on: a lost answer must not lead to a second.
        ctx.save_state(ordering=True)
        answer = ctx.client.json("POST", "api/v2/orders", json=body)
        # providers.md: "returns a list of orders {id, original_id, conversion_id, state, ...}".
        orders = answer if isinstance(answer, list) else (answer or {}).get("list")
        if not isinstance(orders, list) or not orders or not orders[0].get("id"):
            # Outside the contract; ordering again could pay twice, so stop and show it.
            raise ProviderError(
                f"{LABEL} accepted the order but returned no orders ({str(answer)[:200]}).",
                permanent=True,
            )
        ctx.save_remote_id(str(orders[0]["id"]))
        conversions = []
        for n, order in enumerate(orders):
            voice = voices[n] if n < len(voices) else {}
            conversions.append(
                {
                    "order_id": str(order.get("id") or ""),
                    "conversion_id": str(order.get("conversion_id") or ""),
                    "voice_id": str(order.get("voice_id") or voice.get("voice_id") or ""),
                    "semitones_correction": voice.get("semitones_correction"),
                }
            )
        ctx.save_state(conversions=conversions)
        return ctx.remote_id

    def folder(self, ctx: JobContext) -> str:
        """Return the folder id, finding (or creating) the project and the folder by name."""
        if ctx.state.get("folder_id"):
            return ctx.state["folder_id"]
        project_name = ctx.params.get("project_name") or DEFAULT_PROJECT
        folder_name = ctx.params.get("folder_name") or ctx.job.workspace.slug or DEFAULT_PROJECT
        project_id = ctx.state.get("project_id")
        if not project_id:
            # Seed, GET /api/projects: a paginated list; the oldest project of that name wins,
            # so two jobs that raced to create it settle on the same one afterwards.
            found = find_named(ctx.client, "api/projects", project_name, sort="created_at")
            if found is None:
                # Seed, POST /api/projects {name, owner, models}: "models - No longer used";
                # owner is left to the service (the caller), as no endpoint tells us our user id.
                found = ctx.client.json("POST", "api/projects", json={"name": project_name})
            project_id = str(found["id"])
            ctx.save_state(project_id=project_id, project_name=project_name)
        # Seed, GET /api/folders?project_id= and POST /api/folders {name, project_id}.
        found = find_named(
            ctx.client, "api/folders", folder_name, project_id=project_id, top_level=True
        )
        if found is None:
            found = ctx.client.json(
                "POST", "api/folders", json={"name": folder_name, "project_id": project_id}
            )
        ctx.save_state(folder_id=str(found["id"]), folder_name=folder_name)
        return ctx.state["folder_id"]

    def upload(self, ctx: JobContext, folder_id: str) -> str:
        """Upload the original into the folder (POST /api/recordings, multipart)."""
        path = upload_file(ctx)
        fields = {
            "parent_folder_id": folder_id,
            # Seed: "If uploading a file set this field to file".
            "microphone": "file",
            "label": recording_label(ctx.params.get("label") or ctx.job.item.title, ctx.job.pk),
        }
        stem = Path(ctx.job.item.original_filename or ctx.input_name).stem or "original"
        response = upload(
            ctx.client,
            "POST",
            "api/recordings",
            fields=fields,
            files={"data": (f"{stem}{path.suffix}", path)},
        )
        body = ctx.client.json_of(response)
        original_id = body.get("id") if isinstance(body, dict) else None
        if not original_id:
            raise ProviderError(
                f"{LABEL} accepted the upload but returned no recording id ({str(body)[:200]}).",
                permanent=True,
            )
        ctx.save_state(original_id=str(original_id), label=fields["label"])
        return str(original_id)

    def adopt_order(self, ctx: JobContext, original_id: str) -> str | None:
        """Return the order placed by an attempt whose answer was lost, or None when none was."""
        if not ctx.state.get("ordering"):
            return None
        # The order request went out but no answer was recorded (timeout, 5xx, crash): if the
        # original has conversions, that order went through; adopt it instead of paying twice.
        found = list_conversions(ctx.client, original_id)
        if not found:
            return None
        log.info("job %s: adopting the order an earlier attempt placed", ctx.job.pk)
        ctx.save_remote_id(found[0]["conversion_id"])
        ctx.save_state(conversions=found)
        return ctx.remote_id

    def conversions(self, ctx: JobContext) -> list[dict[str, Any]]:
        """Return the job's conversions ({order_id, conversion_id, voice_id}) from state."""
        saved = ctx.state.get("conversions")
        if saved:
            return saved
        found = list_conversions(ctx.client, ctx.state["original_id"])
        if not found:
            # Ordered (we hold an order id) but not listed yet: ask again at the next poll.
            raise ProviderError(f"{LABEL} lists no conversions for order {ctx.remote_id} yet.")
        ctx.save_state(conversions=found)
        return found

    def poll(self, ctx: JobContext) -> RemoteStatus:
        """Read every conversion recording: GET /api/recordings/{conversion_id}."""
        recordings = [
            ctx.client.json("GET", f"api/recordings/{c['conversion_id']}")
            for c in self.conversions(ctx)
        ]
        return combined_status(recordings)

    def collect(self, ctx: JobContext) -> RunResult:
        """Download each voice's result into our files and measure it with the engine's meter."""
        stem = Path(ctx.job.item.original_filename or ctx.input_name).stem or "converted"
        stem = slugify(stem) or "converted"
        outputs: list[Output] = []
        voices: list[dict[str, Any]] = []
        used: set[str] = set()
        for conversion in self.conversions(ctx):
            # Fetched afresh: the recording's url is a signed link that expires.
            recording = ctx.client.json("GET", f"api/recordings/{conversion['conversion_id']}")
            url = recording.get("url") if isinstance(recording, dict) else None
            if not url:
                raise ProviderError(f"{LABEL} has no file for {conversion['conversion_id']} yet.")
            ext = result_extension(recording)
            name = voice_name(recording, conversion)
            filename = unique_name(f"{stem}.{voice_slug(name, conversion)}", ext, used)
            dest = ctx.output_path(filename)
            try:
                # A signed storage link: our API key is not sent to wherever it points.
                size, checksum = ctx.client.download(url, dest, auth=False)
            except ProviderError as exc:
                if exc.permanent or exc.auth:
                    # A refused or expired link says nothing about the account: the next
                    # attempt reads the recording again and gets a fresh link.
                    raise ProviderError(
                        f"{LABEL} refused the download link of {name} ({exc.message}); "
                        "will fetch a fresh one."
                    ) from exc
                raise
            stats = measured(dest)
            stats.update(
                voice_id=conversion.get("voice_id") or recording.get("model_id"),
                voice=name,
                conversion_id=conversion["conversion_id"],
                semitones_correction=conversion.get("semitones_correction"),
            )
            outputs.append(Output(ext, filename, dest, size, checksum, stats))
            voices.append({"filename": filename, **stats})
        statistics: dict[str, Any] = {
            "input": measured(ctx.input_path),
            "output": {k: outputs[0].statistics.get(k) for k in ("integrated", "lra", "true_peak")},
            "voices": voices,
        }
        return RunResult(outputs=outputs, statistics=statistics)


# --- reading Respeecher's answers ------------------------------------------------------------


def detail_text(response: requests.Response) -> str:
    """Return FastAPI's `detail`: the string, or each 422 entry as `field: msg`."""
    try:
        body = response.json()
    except ValueError:
        return error_text(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for entry in detail[:5]:
            if not isinstance(entry, dict):
                parts.append(str(entry))
                continue
            # loc is ["body", "conversions", 0, "voice_id"]: where in the request, minus "body".
            loc = [str(p) for p in entry.get("loc") or [] if p not in ("body", "query", "path")]
            msg = str(entry.get("msg") or entry.get("type") or "invalid")
            parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
        return "; ".join(parts)
    return error_text(response)


def find_named(
    client: ProviderClient,
    path: str,
    name: str,
    *,
    top_level: bool = False,
    **query: Any,
) -> dict[str, Any] | None:
    """Return the first active entry called name in a paginated list, or None."""
    offset = 0
    while True:
        params = {**query, "limit": LIST_PAGE, "offset": offset, "direction": "asc"}
        body = client.json("GET", path, params=params)
        entries = body.get("list") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise ProviderError(f"{LABEL} answered {path} with {str(body)[:100]}.")
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("name") != name or not entry.get("id"):
                continue
            if entry.get("active") is False:
                continue
            # A top-level folder has no parent folder (or, in some answers, the project).
            if top_level and entry.get("parent_id") not in (None, "", query.get("project_id")):
                continue
            return entry
        count = (body.get("pagination") or {}).get("count")
        offset += len(entries)
        if not entries or not isinstance(count, int) or offset >= count:
            return None


def list_conversions(client: ProviderClient, original_id: str) -> list[dict[str, Any]]:
    """Return an original's conversions as saved state (GET /api/recordings/conversions)."""
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = client.json(
            "GET",
            "api/recordings/conversions",
            params={"original_id": original_id, "limit": LIST_PAGE, "offset": offset},
        )
        entries = body.get("list") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise ProviderError(f"{LABEL} answered the conversions list with {str(body)[:100]}.")
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") and entry.get("active") is not False:
                found.append(
                    {
                        "created_at": str(entry.get("created_at") or ""),
                        "order_id": "",
                        "conversion_id": str(entry["id"]),
                        # Assumption: a conversion's model_id is the voice it was ordered with.
                        "voice_id": str(entry.get("model_id") or ""),
                        "semitones_correction": (entry.get("params") or {}).get(
                            "semitones_correction"
                        ),
                    }
                )
        count = (body.get("pagination") or {}).get("count")
        offset += len(entries)
        if not entries or not isinstance(count, int) or offset >= count:
            # Oldest first, so the list follows the voices as they were ordered.
            found.sort(key=lambda c: c.pop("created_at"))
            return found


def conversion_status(recording: dict[str, Any]) -> RemoteStatus:
    """Map one conversion recording onto ours (an unknown word is still running)."""
    state = str(recording.get("state") or "").strip().lower()
    stage = str(recording.get("process_stage") or "").strip().lower()
    if state == ERROR or stage == ERROR:
        return RemoteStatus(FAILED, None, ERROR, str(recording.get("error") or ""))
    if state == DONE:
        if recording.get("url"):
            return RemoteStatus(SUCCESS, 100, DONE)
        # Done but no file link yet: the last stage is still writing it.
        return RemoteStatus(RUNNING, STAGE_PROGRESS["post_processing"], "post_processing")
    if stage in STAGE_PROGRESS:
        return RemoteStatus(RUNNING, STAGE_PROGRESS[stage], stage)
    # processing with an undocumented stage, or an undocumented state: still on its way.
    return RemoteStatus(RUNNING, None, (stage or state or "processing")[:30])


def combined_status(recordings: list[Any]) -> RemoteStatus:
    """Return the job's status from its conversions: all done, any failed, else running."""
    statuses = []
    for recording in recordings:
        recording = recording if isinstance(recording, dict) else {}
        statuses.append((recording, conversion_status(recording)))
    failed = [(r, s) for r, s in statuses if s.state == FAILED]
    if failed:
        reasons = "; ".join(
            f"{r.get('model_name') or r.get('model_id') or 'a voice'}: {s.message or 'failed'}"
            for r, s in failed
        )
        return RemoteStatus(
            FAILED, None, ERROR, f"{LABEL} could not convert the voice ({reasons})."
        )
    if statuses and all(s.state == SUCCESS for _, s in statuses):
        return RemoteStatus(SUCCESS, 100, DONE)
    running = [s for _, s in statuses if s.state != SUCCESS]
    known = [s.progress for _, s in statuses if s.progress is not None]
    progress = round(sum(known) / len(known)) if known and len(known) == len(statuses) else None
    # The least advanced conversion names the stage (an undocumented word shows as it is).
    slowest = min(running, key=lambda s: -1 if s.progress is None else s.progress)
    return RemoteStatus(RUNNING, progress, slowest.stage)


def voice_name(recording: dict[str, Any], conversion: dict[str, Any]) -> str:
    """Return the voice's name as the recording gives it (else its id)."""
    return str(recording.get("model_name") or conversion.get("voice_id") or "voice")


def voice_slug(name: str, conversion: dict[str, Any]) -> str:
    """Return the file name part for a voice: its name, and the correction when one was asked."""
    slug = slugify(name)[:40] or str(conversion.get("voice_id") or "voice")[:8]
    shift = conversion.get("semitones_correction")
    if shift:
        slug += f"{shift:+d}st"
    return slug


def unique_name(base: str, ext: str, used: set[str]) -> str:
    """Return base.ext, numbered when two conversions would share a name."""
    name, n = f"{base}.{ext}", 1
    while name in used:
        n += 1
        name = f"{base}-{n}.{ext}"
    used.add(name)
    return name


def result_extension(recording: dict[str, Any]) -> str:
    """Return the result's file extension from its file name or link (WAV when neither says)."""
    for candidate in (recording.get("file_name"), urlsplit(str(recording.get("url"))).path):
        suffix = PurePosixPath(str(candidate or "")).suffix.lower().lstrip(".")
        if suffix and suffix.isalnum() and len(suffix) <= 5:
            return suffix
    return "wav"


def measured(path: Path) -> dict[str, Any]:
    """Return loudness (ebur128) and duration of a file, as our statistics carry them."""
    try:
        stats = engine.measure(path).as_dict()
        stats["duration"] = round(engine.probe(path).duration, 3)
    except engine.EngineError as exc:
        # A file that does not decode may be a cut-off download: transient, fetched again.
        raise ProviderError(f"{LABEL}'s result could not be measured: {exc}") from exc
    return stats


# --- what we send ----------------------------------------------------------------------------


def recording_label(text: str | None, job_pk: int) -> str:
    """Return a label Respeecher accepts: at most 40 of [a-zA-Z0-9 -], never empty."""
    # Transliterate first (Café -> Cafe), then replace everything else by spaces.
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    label = " ".join(LABEL_BAD.sub(" ", ascii_text).split())
    label = label[:LABEL_MAX].strip(" -")
    return label or f"Media hub job {job_pk}"[:LABEL_MAX]


def upload_file(ctx: JobContext) -> Path:
    """Return the input as a file Respeecher takes: as is, or its audio transcoded to FLAC."""
    path = ctx.input_path
    if path.suffix.lower().lstrip(".") in UPLOAD_FORMATS:
        return path
    # m4a, opus, video ...: lossless FLAC keeps every sample the service will convert.
    dest = ctx.workdir / "original.flac"
    cmd = [
        engine.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-i", str(path), "-map", "0:a:0", "-vn", "-c:a", "flac", str(dest),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, check=False)
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise ProviderError(
            f"The input could not be converted to FLAC for {LABEL}: "
            f"{reason[0].replace(str(path), path.name)}",
            permanent=True,
        )
    return dest
