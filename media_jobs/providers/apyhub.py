"""ApyHub: extract the audio track of a video as an asynchronous job, and collect it at once.

Contract: ../shared/providers.md, section "ApyHub", and the seed document
seeds/apyhub-extract-audio-job-api.txt ("Extract Audio from Video Job API"). The submit calls and
their errors are documented; the URL variant's body and the status answer are not, so those are
sent configurably and read tolerantly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

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

LABEL = "ApyHub"
FILE_SUBMIT = "job/extract/video/audio/file"
URL_SUBMIT = "job/extract/video/audio/url"
STATUS = "job/extract/video/audio/status/{job_id}"
# A job id no submit ever returns: the account check asks for its status (see check_account).
PROBE_JOB_ID = "mediahub-account-check"

# Seed, "Request Body": `video` "in any of supported formats (mp4, webm, flv, avi, mkv, mov, 3gp)".
VIDEO_EXTENSIONS = ("mp4", "webm", "flv", "avi", "mkv", "mov", "3gp")
# Seed: output_format "any of mp3, wav, aac, ogg, flac, wma, ac3, amr. The default is mp3".
OUTPUT_FORMATS = ("mp3", "wav", "aac", "ogg", "flac", "wma", "ac3", "amr")
# Extensions a result link may carry for each format (the first names our copy when the link
# says nothing useful); AAC may come raw (ADTS) or in an MP4 box, Ogg as .ogg or .oga.
RESULT_EXTENSIONS = {
    "mp3": ("mp3",),
    "wav": ("wav",),
    "aac": ("aac", "m4a", "mp4"),
    "ogg": ("ogg", "oga", "opus"),
    "flac": ("flac",),
    "wma": ("wma", "asf"),
    "ac3": ("ac3",),
    "amr": ("amr",),
}
# The URL variant's body is unconfirmed (providers.md): the name of the field carrying the video's
# URL can be changed with the APYHUB_URL_FIELD setting without touching this code.
DEFAULT_URL_FIELD = "url"
# Answers to the URL variant after which uploading the file is worth one more call: nothing was
# created, and these say "not like that" (bad body, no such route, unfetchable URL) rather than
# "not this account" (401) or "later" (429/5xx).
URL_FALLBACK_STATUSES = {400, 404, 405, 415, 422}

# Status words (providers.md: "accept pending | in-progress | processing | completed | failed in
# any case"), compared with everything but letters removed so in-progress, in_progress and
# "In Progress" are one word. ApyHub gives no percentage: each stage stands for a fixed share.
PENDING_WORDS = {"pending", "queued", "waiting", "created", "submitted", "new", "accepted"}
RUNNING_WORDS = {"inprogress", "processing", "running", "started", "active"}
DONE_WORDS = {"completed", "complete", "success", "succeeded", "successful", "done", "finished"}
FAILED_WORDS = {"failed", "failure", "error", "errored"}
# Terminal words ApyHub's docs never use (it has no cancel); should they come, the job will not
# finish, so waiting for the stall timeout would only delay the same outcome.
STOPPED_WORDS = {"cancelled", "canceled", "aborted"}
STAGE_PROGRESS = {"pending": 10, "in-progress": 50}
# Where a finished job's result link is looked for first, in this order (unconfirmed body:
# providers.md "find the result URL in the body"); anything URL-shaped anywhere comes next.
RESULT_KEYS = (
    "data",
    "url",
    "download_url",
    "downloadUrl",
    "output",
    "output_url",
    "result_url",
    "result",
    "file_url",
    "file",
    "link",
    "audio_url",
)
NESTS = ("data", "result", "job", "output")


class ApyHubProvider(Provider):
    kind = "apyhub"
    label = LABEL
    auth_kinds = ("api_key",)
    # The seed documents a submit and a status call only: nothing stops a job, nothing calls back.
    can_cancel = False
    has_webhooks = False
    parameters = (
        Param(
            "start_time",
            float,
            "Start at (seconds)",
            help="Where in the video the extracted audio begins.",
            default=0.0,
            min=0,
        ),
        Param(
            "duration",
            float,
            "Length (seconds)",
            help="How much audio to extract; empty takes the rest of the video from the start.",
            min=0,
        ),
        Param(
            "output_format",
            str,
            "Audio format",
            choices=OUTPUT_FORMATS,
            default="mp3",
        ),
        Param(
            "persistent",
            bool,
            "Keep ApyHub's link",
            help=(
                "Ask ApyHub to keep the result link for good instead of 15 minutes. The result is "
                "copied into our storage as soon as the job ends either way."
            ),
            default=False,
        ),
    )
    credential_fields = (
        CredentialField(
            "api_key",
            "apy-token",
            secret=True,
            help="A token from your ApyHub workspace settings, API Keys.",
        ),
    )

    # --- presets -------------------------------------------------------------------------

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return normalised parameters; a `video` trim window (job overrides) wins over them."""
        params = dict(params) if isinstance(params, dict) else params
        if isinstance(params, dict) and "video" in params:
            # Job overrides only merge sections (services.effective_params), and the built-in
            # engine names its trim window video.start_time / video.duration: the same thing.
            video = params.pop("video") or {}
            if not isinstance(video, dict):
                raise ValueError("video: expected an object with start_time and duration")
            unknown = sorted(set(video) - {"start_time", "duration"})
            if unknown:
                raise ValueError(f"video: unknown options {', '.join(unknown)}")
            params.update({k: v for k, v in video.items() if v not in (None, "")})
        clean = validate_declared(self.parameters, params)
        if clean.get("duration") == 0:
            raise ValueError("duration: must be more than zero seconds")
        return clean

    # --- accounts ------------------------------------------------------------------------

    def auth_headers(self, account: ProviderAccount) -> dict[str, str]:
        # Seed, "Authentication": "Use the apy-token as the header parameter to pass the token".
        return {"apy-token": account.credentials.get("api_key", "")}

    def check_account(self, client: ProviderClient) -> str:
        """Ask for the status of a job that cannot exist: a 401 refuses the token, a 404 not."""
        # ApyHub documents no identity endpoint, and the only call without side effects is the
        # status lookup. Assumption (unconfirmed): ApyHub checks the token before looking the
        # job up, as the seed's 401 ("authentication information is either missing or not
        # valid") suggests, so 404/400 mean the token got past authentication.
        try:
            client.request("GET", STATUS.format(job_id=PROBE_JOB_ID))
        except ProviderError as exc:
            if exc.status not in (400, 404):
                raise
        # 401 (auth error) and 429/5xx (we learnt nothing) were raised as they are.
        # The client computes its headers per call; the last four characters name the token
        # without revealing it.
        token = client.auth_headers().get("apy-token", "")
        return f"apy-token …{token[-4:]}" if len(token) >= 8 else "apy-token"

    def classify_response(self, response: requests.Response) -> ProviderError | None:
        """Classify an error answer by the seed's "HTTP Response Codes" table."""
        status = response.status_code
        text = error_text(response)  # reads ApyHub's {"error": {"code": .., "message": ..}}
        url = response.request.url if response.request is not None else ""
        if not self.is_api(url or ""):
            # A result link on ApyHub's storage, which we fetch without our token.
            if status in TRANSIENT_STATUSES:
                return None  # the storage host is busy: retry (Retry-After honoured)
            # 401/403/404/410 from the storage host say the link is dead (expired, "15 minutes
            # unless persistent=true"), not that the account is refused: keep it enabled.
            return ProviderError(
                f"{LABEL}'s result link no longer works ({status}: {text}); it expires 15 minutes "
                "after the job ends unless persistent is set. Run the job again.",
                status=status,
                permanent=True,
            )
        if status == 401 or status in TRANSIENT_STATUSES:
            # 401 "Required authentication information is either missing or not valid": the
            # default auth error (disables the account). 500 "unexpected error" and the usual
            # 408/425/429/502-504: the default transient error, honouring Retry-After.
            return None
        if status == 400:
            # "Invalid input - the provided files are corrupt or the supported inputs are not
            # provided": the same video will be refused again, so show ApyHub's reason.
            message = f"{LABEL} refused the video ({status}: {text})."
        elif status == 404 and "/status/" in urlsplit(url or "").path:
            # Not in the table: a job ApyHub no longer knows (or never did) cannot come back.
            job_id = urlsplit(url or "").path.rstrip("/").rsplit("/", 1)[-1]
            message = f"{LABEL} has no job {job_id} ({status}: {text})."
        else:
            message = f"{LABEL} rejected the request ({status}: {text})."
        # Any other 4xx refuses this request as it is: retrying it unchanged cannot help.
        return ProviderError(message, status=status, permanent=True)

    def is_api(self, url: str) -> bool:
        """Return whether a URL is one of ApyHub's job endpoints (not a result link)."""
        return url.startswith(self.base_url().rstrip("/") + "/job/")

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, ctx: JobContext) -> str:
        """Send the video (its storage link when ApyHub can fetch it, else the file itself)."""
        if ctx.remote_id:
            # The job exists from before a crash: resume it, never start a second one.
            return ctx.remote_id
        check_input(ctx)
        start, duration = trim_window(ctx)
        fmt = ctx.params.get("output_format") or "mp3"
        persistent = bool(ctx.params.get("persistent"))
        # Seed, "Request Body": start_time, duration and output_format are Strings. duration is
        # always sent: ApyHub's default is 2 seconds, not the rest of the video.
        fields = {
            "start_time": seconds(start),
            "duration": seconds(duration),
            "output_format": fmt,
        }
        # Seed, "Query Parameter(s)": persistent, default false; sent explicitly either way.
        query = {"persistent": "true" if persistent else "false"}
        body = None
        intake = "file"
        url = ctx.input_url()
        # Only https links: a plain-http store is a local stand-in ApyHub cannot reach anyway.
        if url and urlsplit(url).scheme == "https":
            field = getattr(settings, "APYHUB_URL_FIELD", DEFAULT_URL_FIELD) or DEFAULT_URL_FIELD
            try:
                body = ctx.client.json(
                    "POST", URL_SUBMIT, params=query, json={field: url, **fields}
                )
                intake = "url"
            except ProviderError as exc:
                if exc.status not in URL_FALLBACK_STATUSES:
                    raise
                # Nothing was created: sending the bytes ourselves still gets the job done.
                log.info("job %s: %s; uploading the video instead", ctx.job.pk, exc.message)
        if body is None:
            # Seed: multipart/form-data with the `video` file, streamed from disk.
            response = upload(
                ctx.client,
                "POST",
                FILE_SUBMIT,
                fields=fields,
                files={"video": (ctx.input_name, ctx.input_path)},
                params=query,
            )
            try:
                body = response.json()
            except ValueError:
                body = response.text  # holds no job id: refused below, like any such answer
        job_id = job_id_of(body)
        if not job_id:
            # A 200 without a job id is outside the contract. Retrying could start a second job
            # we would never see, so stop here and show what came back.
            raise ProviderError(
                f"{LABEL} accepted the video but returned no job_id ({str(body)[:200]}).",
                permanent=True,
            )
        ctx.save_remote_id(job_id)
        ctx.save_state(intake=intake, output_format=fmt, persistent=persistent)
        return job_id

    def poll(self, ctx: JobContext) -> RemoteStatus:
        """Read the job's status: GET /job/extract/video/audio/status/{job_id}."""
        return remote_status(self.status(ctx))

    def collect(self, ctx: JobContext) -> RunResult:
        """Download the extracted audio now (its link expires) and measure it."""
        # The poll that saw "completed" ran in this same task moments ago; asking again gives
        # the link without keeping it anywhere (it is a bearer link to the result).
        body = self.status(ctx)
        exclude = ""
        if ctx.state.get("intake") == "url" and (source := ctx.input_url()):
            exclude = urlsplit(source).path  # a status echoing our input link is not the result
        link = result_url(body, exclude_path=exclude)
        if not link:
            # Completed without a link yet (storage lag): transient, asked again a few times.
            raise ProviderError(f"{LABEL} finished job {ctx.remote_id} but gave no result link.")
        fmt = ctx.state.get("output_format") or ctx.params.get("output_format") or "mp3"
        filename = output_filename(ctx, link, fmt)
        dest = ctx.output_path(filename)
        # The link is a storage URL on another host as a rule: our token goes to ApyHub's API
        # origin only, never to whoever serves the file.
        size, checksum = ctx.client.download(
            link, dest, auth=same_origin(link, ctx.client.base_url)
        )
        try:
            facts = engine.probe(dest)
            loudness = engine.measure(dest, duration=facts.duration)
        except engine.EngineError as exc:
            raise ProviderError(
                f"{LABEL}'s result for job {ctx.remote_id} is not playable audio: {exc}",
                permanent=True,
            ) from exc
        measured = {**loudness.as_dict(), "duration": round(facts.duration, 3)}
        output = Output(
            format=fmt,
            filename=filename,
            path=dest,
            size=size,
            checksum=checksum,
            statistics=dict(measured),
        )
        return RunResult(outputs=[output], statistics={"output": measured})

    def status(self, ctx: JobContext) -> dict[str, Any]:
        body = ctx.client.json("GET", STATUS.format(job_id=ctx.remote_id))
        if not isinstance(body, dict):
            raise ProviderError(f"{LABEL} answered the status call with {str(body)[:100]}.")
        return body


# --- before the call -----------------------------------------------------------------------


def check_input(ctx: JobContext) -> None:
    """Refuse, without calling ApyHub, an input it documents it cannot take."""
    item = ctx.job.item
    ext = PurePosixPath(ctx.input_name).suffix.lower().lstrip(".")
    if ext not in VIDEO_EXTENSIONS:
        raise ProviderError(
            f"{LABEL} extracts audio from video files only ({', '.join(VIDEO_EXTENSIONS)}); "
            f"{item.original_filename or ctx.input_name} is not one.",
            permanent=True,
        )
    probed = bool(item.format_name)
    if probed and not item.has_video:
        raise ProviderError(
            f"{LABEL} extracts audio from video files only; "
            f"{item.original_filename or ctx.input_name} has no video track.",
            permanent=True,
        )
    if probed and not item.codec:
        raise ProviderError(
            f"{item.original_filename or ctx.input_name} has no audio track to extract.",
            permanent=True,
        )


def trim_window(ctx: JobContext) -> tuple[float, float]:
    """Return (start_time, duration) to send; duration defaults to the rest of the video."""
    start = float(ctx.params.get("start_time") or 0.0)
    length = ctx.job.item.duration
    if length is None:
        # Intake records every item's duration; an older item without one is probed here.
        try:
            length = engine.probe(ctx.input_path).duration
        except engine.EngineError as exc:
            raise ProviderError(f"The video cannot be read: {exc}", permanent=True) from exc
    if length and start >= length:
        raise ProviderError(
            f"start_time {start:g} s is past the end of the video ({length:.1f} s).",
            permanent=True,
        )
    duration = ctx.params.get("duration")
    if duration is None:
        # ApyHub's own default is 2 seconds (seed: "The default is 2 seconds"), which would cut
        # every video short: ask for everything from start_time to the end.
        duration = max(0.001, (length or 0.0) - start)
    return start, float(duration)


def seconds(value: float) -> str:
    """Return seconds as ApyHub's string fields take them: "90", "2.5", "7.041"."""
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


# --- reading ApyHub's answers (shapes unconfirmed: providers.md) ------------------------------


def job_id_of(body: Any) -> str:
    """Return the job id of a submit answer: {"job_id": ..} or {"data": {"job_id": ..}}."""
    if not isinstance(body, dict):
        return ""
    for holder in (body, body.get("data")):
        if isinstance(holder, dict):
            value = holder.get("job_id") or holder.get("jobId")
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
    return ""


def status_word(body: dict[str, Any]) -> str:
    """Return the status word wherever the body keeps it (top level or one level in)."""
    for holder in (body, *(body.get(k) for k in NESTS)):
        if not isinstance(holder, dict):
            continue
        for key in ("status", "state", "job_status", "jobStatus"):
            value = holder.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return ""


def remote_status(body: dict[str, Any]) -> RemoteStatus:
    """Map a status answer onto ours (any case or spelling; an unknown word is still running)."""
    word = status_word(body)
    key = re.sub(r"[^a-z]", "", word.lower())
    if key in DONE_WORDS:
        return RemoteStatus(SUCCESS, 100, "completed")
    if key in FAILED_WORDS or key in STOPPED_WORDS:
        reason = failure_reason(body) or word.lower()
        return RemoteStatus(
            FAILED, None, "failed", f"{LABEL} could not extract the audio: {reason}."
        )
    if key in PENDING_WORDS:
        return RemoteStatus(RUNNING, STAGE_PROGRESS["pending"], "pending")
    if key in RUNNING_WORDS:
        return RemoteStatus(RUNNING, STAGE_PROGRESS["in-progress"], "in-progress")
    # Undocumented (a new stage, or no status at all): still running; show the word.
    return RemoteStatus(RUNNING, None, word.lower()[:30] or "processing")


def failure_reason(body: dict[str, Any]) -> str:
    """Return the error text of a failed job's answer, in any of the likely places."""
    for holder in (body, *(body.get(k) for k in NESTS)):
        if not isinstance(holder, dict):
            continue
        for key in ("error", "error_message", "message", "detail", "reason"):
            value = holder.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value.get("title")
            if isinstance(value, str) and value.strip():
                return value.strip().rstrip(".")
    return ""


def is_link(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def result_url(body: Any, *, exclude_path: str = "") -> str:
    """Return the result link of a finished job's answer ("" when there is none)."""

    def usable(value: Any) -> bool:
        return is_link(value) and not (exclude_path and urlsplit(value).path == exclude_path)

    if not isinstance(body, dict):
        return ""
    for holder in (body, *(body.get(k) for k in NESTS)):
        if not isinstance(holder, dict):
            continue
        for key in RESULT_KEYS:
            value = holder.get(key)
            if isinstance(value, dict):
                value = value.get("url") or value.get("download_url") or value.get("link")
            if usable(value):
                return value
    return next((value for value in links_in(body) if usable(value)), "")


def links_in(value: Any) -> Iterator[str]:
    """Yield every URL-shaped string inside a JSON value, depth first."""
    if is_link(value):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from links_in(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from links_in(inner)


def same_origin(url: str, base: str) -> bool:
    """Return whether url is on the same scheme, host and port as base."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def output_filename(ctx: JobContext, link: str, fmt: str) -> str:
    """Return our name for the result: the input's stem and the link's (or the format's) suffix."""
    allowed = RESULT_EXTENSIONS.get(fmt, (fmt,))
    ext = PurePosixPath(urlsplit(link).path).suffix.lower().lstrip(".")
    if ext not in allowed:
        ext = allowed[0]
    stem = Path(ctx.job.item.original_filename or ctx.input_name).stem or "audio"
    return f"{stem}.{ext}"
