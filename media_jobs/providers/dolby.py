"""Dolby.io Media APIs (enhance, analyze, diagnose, transcode) as a remote provider.

The contract is ../shared/providers.md, "Dolby.io Media", and the seed document
seeds/dolby-media-apis.txt; comments cite them as (contract) and (seed).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.conf import settings

from media_jobs.providers.base import (
    CANCELLED,
    FAILED,
    PENDING,
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
from media_jobs.providers.http import TRANSIENT_STATUSES, error_text, retry_after

if TYPE_CHECKING:
    import requests

    from media_jobs.models import ProviderAccount
    from media_jobs.providers.context import JobContext
    from media_jobs.providers.http import ProviderClient

T = TypeVar("T")

OPERATIONS = ("enhance", "analyze", "analyze/speech", "diagnose", "transcode")
# Operations whose result is a media file written to `output` (seed: "Media File ... Enhance").
MEDIA_OPERATIONS = ("enhance", "transcode")
# Operations whose JSON result is a data file written to `output` (seed: "Data File ... Analyze").
DATA_FILE_OPERATIONS = ("analyze", "analyze/speech")
# (Diagnose answers its JSON in the status response itself: seed, "JSON ... Diagnose".)
CONTENT_TYPES = (
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
)
NOISE_AMOUNTS = ("low", "medium", "high", "max")
OUTPUT_FORMATS = ("wav", "mp3", "m4a", "flac", "ogg", "opus", "mp4")
ENHANCE_ONLY = ("content_type", "loudness_target", "noise_reduction", "speech_isolation")
# Our format names for output extensions (the engine calls AAC-in-MP4 "aac").
FORMAT_OF_EXTENSION = {"m4a": "aac", "mp4": "aac"}

# Dolby's job statuses (contract: "Pending | Running | Success | Failed | Cancelled"), compared
# case-insensitively; anything else means "still running" (contract, general rules).
STATUSES = {
    "pending": PENDING,
    "running": RUNNING,
    "success": SUCCESS,
    "failed": FAILED,
    "cancelled": CANCELLED,
}


class TokenRefused(ProviderError):
    """The API refused an access token (401): expired early, revoked, or the app is gone."""

    def __init__(self, message: str, token_digest: str):
        super().__init__(message, auth=True)
        # A digest, so the exception never carries the token itself.
        self.token_digest = token_digest


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def forget_token(account: ProviderAccount, token_digest: str) -> None:
    """Drop the account's cached access token if it is the one the API refused."""
    from media_jobs.models import ProviderAccount

    cached = account.credentials.get("access_token", "")
    if not cached or digest(cached) != token_digest:
        return  # already renewed (by another worker, or by this one a moment ago)
    creds = {k: v for k, v in account.credentials.items() if k != "access_token"}
    account.credentials, account.token_expires_at = creds, None
    ProviderAccount.objects.filter(pk=account.pk).update(credentials=creds, token_expires_at=None)


def redact(url: str) -> str:
    """Return a URL without its query (a presigned URL's signature is a credential)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def problem_text(response: requests.Response) -> str:
    """Return the message of Dolby's error shape {type, status, title, detail} (contract)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        title, detail = body.get("title"), body.get("detail")
        if isinstance(title, str) and isinstance(detail, str) and title and detail:
            return f"{title}: {detail}"
        if isinstance(detail, str) and detail:
            return detail
    return error_text(response)


def find_loudness(result: dict[str, Any]) -> dict[str, float]:
    """Return integrated/lra/true_peak from an analyze or diagnose result, where present."""
    candidates = [
        result.get("processed_region", {}).get("audio", {}).get("loudness"),  # analyze
        result.get("audio", {}).get("loudness"),  # diagnose
        result.get("loudness"),
    ]
    for found in candidates:
        if not isinstance(found, dict):
            continue
        mapped: dict[str, float] = {}
        for ours, theirs in (
            ("integrated", ("integrated",)),
            ("lra", ("range", "lra", "loudness_range")),
            ("true_peak", ("true_peak",)),
        ):
            for key in theirs:
                value = found.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    mapped[ours] = float(value)
                    break
        if mapped:
            return mapped
    return {}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


class DolbyProvider(Provider):
    kind = "dolby"
    label = "Dolby.io Media"
    auth_kinds = ("oauth2_client_credentials",)
    can_cancel = True
    has_webhooks = True
    parameters = (
        Param(
            "operation",
            str,
            "Operation",
            "Which Media API processes the file.",
            choices=OPERATIONS,
            default="enhance",
        ),
        Param(
            "content_type",
            str,
            "Content type",
            "What the recording is; tunes enhancement (Dolby detects it when unset).",
            choices=CONTENT_TYPES,
        ),
        Param(
            "loudness_target",
            float,
            "Loudness target (LUFS)",
            "Enables loudness correction to this integrated loudness.",
            min=-31,
            max=-5,
        ),
        Param(
            "noise_reduction",
            str,
            "Noise reduction",
            "How much background noise to remove.",
            choices=NOISE_AMOUNTS,
        ),
        Param(
            "speech_isolation",
            int,
            "Speech isolation",
            "How strongly to separate speech from everything else (0-100).",
            min=0,
            max=100,
        ),
        Param(
            "output_format",
            str,
            "Output format",
            "Enhance and transcode only; defaults to the input's format.",
            choices=OUTPUT_FORMATS,
        ),
    )
    # The app key identifies the app (it becomes the account's identity); the secret is the secret.
    credential_fields = (
        CredentialField("app_key", "App key", secret=False),
        CredentialField("app_secret", "App secret", secret=True),
    )

    # --- presets -------------------------------------------------------------------------

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        clean = validate_declared(self.parameters, params)
        operation = clean["operation"]
        if operation != "enhance":
            misplaced = [name for name in ENHANCE_ONLY if name in clean]
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)}: only the enhance operation takes these.")
        if operation not in MEDIA_OPERATIONS and "output_format" in clean:
            raise ValueError(f"output_format: {operation} writes a JSON report, not media.")
        return clean

    # --- accounts ------------------------------------------------------------------------

    def token_url(self) -> str:
        return settings.PROVIDER_BASE_URLS["dolby_auth"]

    def auth_headers(self, account: ProviderAccount) -> dict[str, str]:
        """Return a Bearer header with the account's cached token (renewed before expiry)."""
        from media_jobs.connections import client_credentials_token

        # Contract: POST the token URL with HTTP Basic app_key:app_secret and
        # grant_type=client_credentials; a refused request is an auth error (oauth_error).
        token = client_credentials_token(account, self.token_url(), self.label)
        return {"Authorization": f"Bearer {token}"}

    def check_account(self, client: ProviderClient) -> str:
        # Contract: GET /media/jobs lists the app's jobs: the cheapest authenticated call.
        self.call(client, lambda: client.request("GET", "media/jobs"))
        account = client.account
        app_key = account.credentials.get("app_key", "") if account is not None else ""
        return f"app {app_key}" if app_key else "Dolby.io app"

    def call(self, client: ProviderClient, send: Callable[[], T]) -> T:
        """Send an API request; if the API refuses our cached token, renew it and retry once."""
        try:
            return send()
        except TokenRefused as exc:
            account = client.account
            if account is None:
                raise
            # A cached token can die before its announced expiry (revoked, or a clock
            # skew between us and Dolby): renew it once before calling it an auth error.
            # A second 401 with a brand-new token means the app itself is refused.
            forget_token(account, exc.token_digest)
            return send()

    def is_api(self, url: str) -> bool:
        """Return whether a URL is a Media API endpoint (not a presigned storage URL)."""
        return url.startswith(self.base_url().rstrip("/") + "/media/")

    def classify_response(self, response: requests.Response) -> ProviderError | None:
        """Classify a non-2xx answer (contract: errors are {type, status, title, detail})."""
        status = response.status_code
        text = problem_text(response)
        url = response.request.url or response.url
        if not self.is_api(url):
            # A presigned storage URL (our upload, or the result after /media/output's
            # redirect). 401/403 there mean the link's signature expired: the next attempt
            # asks for a fresh link, so it is transient.
            if status in (401, 403):
                return ProviderError(
                    f"{self.label} storage refused an expired link ({status}: {text})."
                )
            if status in TRANSIENT_STATUSES:
                return ProviderError(
                    f"{self.label} storage is unavailable ({status}: {text}).",
                    retry_after=retry_after(response),
                )
            return ProviderError(
                f"{self.label} storage refused the transfer ({status}: {text}).", permanent=True
            )
        if status == 401:
            # The API refused our Bearer token (the token endpoint's refusals come through
            # authlib instead): an auth error, but `call` renews the token and retries once.
            sent = response.request.headers.get("Authorization", "")
            return TokenRefused(
                f"{self.label} refused the access token ({status}: {text}). Reconnect the account.",
                digest(sent.removeprefix("Bearer ").strip()),
            )
        if status == 403:
            # The token is valid but this app may not use the Media APIs: every job on this
            # account would fail the same way, so the account is disabled.
            return ProviderError(
                f"{self.label} refused access for this app ({status}: {text}).", auth=True
            )
        if status in TRANSIENT_STATUSES:
            # 408/425/429/5xx: try again later, honouring Retry-After.
            return ProviderError(
                f"{self.label} is unavailable ({status}: {text}).",
                retry_after=retry_after(response),
            )
        # 400 validation errors, 404 unknown job or object, 415 and the rest: our request or
        # the input is wrong, and sending it again cannot help.
        return ProviderError(
            f"{self.label} rejected the request ({status}: {text}).", permanent=True
        )

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, ctx: JobContext) -> str:
        if ctx.remote_id:
            # The job was created before a crash: never create a second one.
            return ctx.remote_id
        if "name" not in ctx.state:
            # Unique per job and per install (two databases may share one Dolby app).
            ctx.save_state(name=f"mediahub-{ctx.job.pk}-{secrets.token_hex(4)}")
        operation = ctx.params.get("operation", "enhance")
        source = self.ensure_input(ctx)
        body = self.job_body(ctx, operation, source)
        # POST /media/<operation> gives {"job_id"} (contract). Dolby takes no idempotency
        # key, so the id is saved the moment it arrives.
        answer = self.call(
            ctx.client, lambda: ctx.client.json("POST", f"media/{operation}", json=body)
        )
        job_id = answer.get("job_id") if isinstance(answer, dict) else None
        if not job_id:
            raise ProviderError(f"{self.label} accepted the job but sent no job_id.")
        ctx.save_remote_id(str(job_id))
        return str(job_id)

    def ensure_input(self, ctx: JobContext) -> str:
        """Return where Dolby reads the input: a presigned URL, or dlb:// after an upload."""
        url = ctx.input_url()
        if url is not None:
            return url  # any readable https URL works as input (contract)
        if ctx.state.get("uploaded"):
            return ctx.state["input"]
        dlb = f"dlb://in/{ctx.state['name']}{Path(ctx.input_name).suffix.lower()}"
        ctx.save_state(input=dlb)
        # POST /media/input {"url": "dlb://in/..."} returns a presigned PUT url (contract);
        # asked again on every attempt, since the previous link may have expired.
        answer = self.call(
            ctx.client, lambda: ctx.client.json("POST", "media/input", json={"url": dlb})
        )
        put_url = answer.get("url") if isinstance(answer, dict) else None
        if not put_url:
            raise ProviderError(f"{self.label} sent no upload URL for the input.")
        with ctx.input_path.open("rb") as fh:
            # Streamed; no bearer token to a presigned URL (auth=False).
            self.transfer(lambda: ctx.client.request("PUT", put_url, auth=False, data=fh), put_url)
        ctx.save_state(uploaded=True)
        return dlb

    def transfer(self, send: Callable[[], T], url: str) -> T:
        """Run a storage transfer, keeping the presigned URL's signature out of messages."""
        try:
            return send()
        except ProviderError as exc:
            raise ProviderError(
                exc.message.replace(url, redact(url)),
                permanent=exc.permanent,
                auth=exc.auth,
                retry_after=exc.retry_after,
            ) from None

    def output_extension(self, ctx: JobContext) -> str:
        chosen = ctx.params.get("output_format")
        if chosen:
            return chosen
        ext = Path(ctx.input_name).suffix.lower().lstrip(".")
        return ext if ext in OUTPUT_FORMATS else "wav"

    def output_location(self, ctx: JobContext) -> str:
        operation = ctx.params.get("operation", "enhance")
        ext = self.output_extension(ctx) if operation in MEDIA_OPERATIONS else "json"
        return f"dlb://out/{ctx.state['name']}.{ext}"

    def job_body(self, ctx: JobContext, operation: str, source: str) -> dict[str, Any]:
        """Return the documented request body of an operation."""
        params = ctx.params
        # A one-time callback (seed: "specified at the time of submission as a one-time
        # callback"); the per-job token in the URL authenticates Dolby's unsigned call.
        callback = {"url": ctx.webhook_url}
        output = self.output_location(ctx)
        if operation == "transcode":
            # Transcode takes lists of inputs and outputs (Dolby's Transcode reference;
            # unconfirmed in the contract, so the emulator also takes input/output).
            ext = self.output_extension(ctx)
            return {
                "inputs": [{"source": source}],
                "outputs": [{"id": "main", "destination": output, "kind": ext}],
                "callback": callback,
            }
        if operation == "diagnose":
            return {"input": source, "callback": callback}
        body: dict[str, Any] = {"input": source, "output": output}
        if operation == "enhance":
            # Contract: {input, output, content{type}, audio{loudness{enable, target_level},
            # noise{reduction{enable, amount}}, speech{isolation{enable, amount}}}}.
            if params.get("content_type"):
                body["content"] = {"type": params["content_type"]}
            audio: dict[str, Any] = {}
            if params.get("loudness_target") is not None:
                audio["loudness"] = {"enable": True, "target_level": params["loudness_target"]}
            if params.get("noise_reduction"):
                audio["noise"] = {
                    "reduction": {"enable": True, "amount": params["noise_reduction"]}
                }
            if params.get("speech_isolation") is not None:
                audio["speech"] = {
                    "isolation": {"enable": True, "amount": params["speech_isolation"]}
                }
            if audio:
                body["audio"] = audio
        body["callback"] = callback
        return body

    def status_path(self, ctx: JobContext) -> str:
        operation = ctx.params.get("operation", "enhance")
        return f"media/{operation}?{urlencode({'job_id': ctx.remote_id})}"

    def poll(self, ctx: JobContext) -> RemoteStatus:
        # GET /media/<operation>?job_id= gives {path, status, progress, api_version, result,
        # error{type, title, detail}} (contract).
        body = self.call(ctx.client, lambda: ctx.client.json("GET", self.status_path(ctx)))
        if not isinstance(body, dict):
            raise ProviderError(f"{self.label} sent a job status that is not an object.")
        word = str(body.get("status") or "").strip()
        # Unknown words mean "still running", never failed (contract, general rules).
        state = STATUSES.get(word.lower(), RUNNING)
        progress = body.get("progress")
        # Dolby is the one provider with a real percentage (contract, general rules).
        numeric = isinstance(progress, int | float) and not isinstance(progress, bool)
        percent = int(progress) if numeric else None
        message = ""
        if state == FAILED:
            message = self.failure_message(body.get("error"))
        elif state == CANCELLED:
            message = f"{self.label} cancelled the job."
        return RemoteStatus(
            state=state,
            progress=percent,
            stage=(word.lower() or "processing")[:30],
            message=message,
        )

    def failure_message(self, error: Any) -> str:
        if isinstance(error, dict):
            title, detail = error.get("title") or "", error.get("detail") or ""
            text = f"{title}: {detail}" if title and detail else title or detail
            if text:
                return f"{self.label} failed the job: {text}"
        return f"{self.label} failed the job without saying why."

    def collect(self, ctx: JobContext) -> RunResult:
        operation = ctx.params.get("operation", "enhance")
        stem = Path(ctx.job.item.original_filename or ctx.input_name).stem or "output"
        if operation in MEDIA_OPERATIONS:
            ext = self.output_extension(ctx)
            filename = f"{stem}.{ext}"
            dest = ctx.output_path(filename)
            size, checksum = self.download_output(ctx, dest)
            output = Output(FORMAT_OF_EXTENSION.get(ext, ext), filename, dest, size, checksum)
            statistics: dict[str, Any] = {"operation": operation}
            if ctx.params.get("loudness_target") is not None:
                statistics["target"] = ctx.params["loudness_target"]
            return RunResult(outputs=[output], statistics=statistics)

        filename = f"{stem}.dolby-{operation.replace('/', '-')}.json"
        dest = ctx.output_path(filename)
        # Diagnose answers in the status response's `result`; Analyze writes a JSON data file
        # to `output` (seed: "JSON ... Diagnose", "Data File ... Analyze"). Take `result`
        # when it holds something, else the data file.
        body = self.call(ctx.client, lambda: ctx.client.json("GET", self.status_path(ctx)))
        result = body.get("result") if isinstance(body, dict) else None
        if not result and operation in DATA_FILE_OPERATIONS:
            size, checksum = self.download_output(ctx, dest)
            try:
                result = json.loads(dest.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ProviderError(f"{self.label} wrote a result that is not JSON.") from exc
        else:
            dest.write_text(json.dumps(result, indent=2), encoding="utf-8")
            size, checksum = dest.stat().st_size, sha256_file(dest)
        if not isinstance(result, dict):
            raise ProviderError(f"{self.label} sent no {operation} result.")
        statistics = {**result, "operation": operation}
        loudness = find_loudness(result)
        if loudness:
            statistics["output"] = loudness
        report = Output("json", filename, dest, size, checksum, kind="report")
        return RunResult(outputs=[report], statistics=statistics)

    def download_output(self, ctx: JobContext, dest: Path) -> tuple[int, str]:
        """Stream the job's output via GET /media/output?url=dlb://... (contract)."""
        path = f"media/output?{urlencode({'url': self.output_location(ctx)})}"
        # The answer redirects to a presigned URL; requests drops our Authorization header
        # when the redirect leaves the API host, so the token never reaches the storage.
        return self.call(ctx.client, lambda: ctx.client.download(path, dest))

    def cancel(self, ctx: JobContext) -> None:
        # POST /media/jobs/cancel?job_id= with a JSON body {} (contract).
        path = f"media/jobs/cancel?{urlencode({'job_id': ctx.remote_id})}"
        self.call(ctx.client, lambda: ctx.client.request("POST", path, json={}))
