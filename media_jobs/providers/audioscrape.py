"""Audioscrape: upload audio into a dataset, let it transcribe and diarise, collect the transcript.

Contract: ../shared/providers.md, section "Audioscrape", and the seed document
seeds/audioscrape-upload-api.txt ("Upload API"). Only the upload request and its answers are
documented; the item and transcript bodies are not, so reading them is deliberately tolerant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

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
)
from media_jobs.providers.http import TRANSIENT_STATUSES, error_text, upload

if TYPE_CHECKING:
    from media_jobs.models import ProviderAccount
    from media_jobs.providers.context import JobContext
    from media_jobs.providers.http import ProviderClient

log = logging.getLogger(__name__)

LABEL = "Audioscrape"

# Item statuses (seed, "After upload": queued -> processing -> published) -> public progress.
# Audioscrape gives no percentage, so each documented stage stands for a fixed share.
STAGE_PROGRESS = {"queued": 10, "processing": 50}
DONE_WORDS = {"published"}
# Undocumented, but the words a pipeline uses when it gives up: only these mean FAILED; any other
# unknown word means the item is still on its way (providers.md: "Unknown status values mean still
# running, never failed").
FAILED_WORDS = {"failed", "failure", "error", "errored"}

DATASET_PATH = re.compile(r"/datasets/(\d+)/items/?$")
ITEM_PATH = re.compile(r"/items/(\d+)(/transcript)?/?$")


class AudioscrapeProvider(Provider):
    kind = "audioscrape"
    label = LABEL
    auth_kinds = ("api_key",)
    # The upload API documents neither a cancel/delete call nor a completion webhook: poll only.
    can_cancel = False
    has_webhooks = False
    parameters = (
        Param(
            "dataset_id",
            int,
            "Dataset ID",
            help="The numeric ID of the upload-type Audioscrape dataset that receives the audio.",
            required=True,
            min=1,
        ),
        Param(
            "language",
            str,
            "Language",
            help=(
                "Expected language, e.g. en; auto lets Audioscrape detect it. The upload API has "
                "no language field, so this is not sent: it labels the transcript when "
                "Audioscrape does not report a language."
            ),
            default="auto",
        ),
        Param(
            "diarize",
            bool,
            "Speaker labels",
            help=(
                "Keep Audioscrape's speaker labels in the transcript files. Audioscrape always "
                "diarises (not configurable through the upload API); off drops the labels."
            ),
            default=True,
        ),
    )
    credential_fields = (CredentialField("api_key", "API key", secret=True),)

    # --- accounts ------------------------------------------------------------------------

    def auth_headers(self, account: ProviderAccount) -> dict[str, str]:
        # providers.md: "Auth `Authorization: Bearer <api_key>`".
        return {"Authorization": f"Bearer {account.credentials.get('api_key', '')}"}

    def check_account(self, client: ProviderClient) -> str:
        """Look up item 0 (never exists): a valid key gets past auth to a 404, a bad one a 401."""
        # The contract names no identity endpoint and every documented call needs a dataset or
        # item id, so the cheapest authenticated call is a lookup that cannot hit anything.
        # Assumption (unconfirmed): Audioscrape checks the key before looking the item up, as the
        # seed's 401-before-404 error table suggests.
        try:
            client.request("GET", "items/0")
        except ProviderError as exc:
            if exc.auth or not exc.permanent:
                # 401: refused key. Timeouts, 429, 5xx: we learnt nothing, say so.
                raise
            # 403/404 and other refusals came after authentication: the key is good.
        return f"{LABEL} API key"

    def classify_response(self, response: requests.Response) -> ProviderError | None:
        """Classify an error answer by the seed's "Error responses" table."""
        status = response.status_code
        text = error_text(response)
        path = urlsplit(response.request.url or "").path if response.request else ""
        if status == 401 or status in TRANSIENT_STATUSES:
            # 401 "Missing or invalid API key": the default auth error (disables the account).
            # 408/425/429/5xx: the default transient error, honouring Retry-After.
            return None
        if status == 400:
            # "Invalid request body or URL (bad JSON, non-https scheme, unparseable URL)".
            message = f"{LABEL} refused the request as invalid (400: {text})."
        elif status == 403:
            # "Caller is not a member of the dataset's parent library, or transcription quota
            # exhausted": not the key itself, so the account stays enabled.
            message = (
                f"{LABEL} refused: this account is not a member of the dataset's library or its "
                f"transcription quota is used up (403: {text})."
            )
        elif status == 404 and (match := DATASET_PATH.search(path)):
            # "Dataset not found (also returned when caller lacks access)".
            message = (
                f"The {LABEL} dataset {match.group(1)} does not exist or this account can't "
                f"reach it (404: {text})."
            )
        elif status == 404 and (match := ITEM_PATH.search(path)):
            # Not in the table, but the same rule as datasets: gone or not ours.
            what = "transcript of item" if match.group(2) else "item"
            message = f"{LABEL} has no {what} {match.group(1)} for this account (404: {text})."
        elif status == 413:
            # "File exceeds the per-upload size cap on this plan".
            message = f"{LABEL} refused the file as too large for this plan (413: {text})."
        elif status == 415:
            # "Audio format not in the dataset's allowed-formats list".
            message = f"{LABEL} does not accept this audio format in the dataset (415: {text})."
        elif status == 422:
            # "Audio URL unreachable, returned non-2xx, or resolved to a forbidden address".
            message = f"{LABEL} could not fetch the audio URL (422: {text})."
        else:
            message = f"{LABEL} rejected the request ({status}: {text})."
        # Every 4xx left is a refusal of this request: retrying the same request cannot help.
        return ProviderError(message, status=status, permanent=True)

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, ctx: JobContext) -> str:
        """Upload the item into the dataset (by URL when our storage gives one, else as a file)."""
        if ctx.remote_id:
            # The item was created before a crash: resume it, never upload a second copy.
            return ctx.remote_id
        path = f"datasets/{ctx.params['dataset_id']}/items"
        item = ctx.job.item
        # Only the documented fields: title and description (both optional, so omit empty ones).
        fields = {"title": item.title, "description": item.description}
        fields = {k: v for k, v in fields.items() if v}
        url = ctx.input_url()
        body = None
        intake = "url"
        if url and urlsplit(url).scheme == "https":
            # Seed, "JSON URL upload": Audioscrape fetches https:// URLs server-side.
            try:
                body = ctx.client.json("POST", path, json={"audio_url": url, **fields})
            except ProviderError as exc:
                if exc.status != 422:
                    raise
                # 422: Audioscrape cannot reach our object store (a private MinIO, say). Nothing
                # was created, so sending the bytes ourselves is safe and still gets it there.
                log.info("job %s: %s; uploading the file instead", ctx.job.pk, exc.message)
        if body is None:
            # Seed, "Multipart upload": the bytes travel in the `audio` form field. Plain-http
            # URLs (a local S3 stand-in) would be refused with 400, so those upload too.
            response = upload(
                ctx.client,
                "POST",
                path,
                fields=fields,
                files={"audio": (ctx.input_name, ctx.input_path)},
            )
            body = ctx.client.json_of(response)
            intake = "multipart"
        # Seed, "Response fields": {"success": true, "item_id": N, "message": "..."}.
        item_id = body.get("item_id") if isinstance(body, dict) else None
        if item_id in (None, "") or (isinstance(body, dict) and body.get("success") is False):
            # A 200 without an item id is outside the contract. Retrying could create a second
            # item we would never see, so stop here and show what came back.
            raise ProviderError(
                f"{LABEL} accepted the upload but returned no item_id ({str(body)[:200]}).",
                permanent=True,
            )
        ctx.save_remote_id(str(item_id))
        ctx.save_state(intake=intake, dataset_id=ctx.params["dataset_id"])
        return str(item_id)

    def poll(self, ctx: JobContext) -> RemoteStatus:
        """Read the item's status: GET /api/items/{id}."""
        return remote_status(self.item(ctx))

    def collect(self, ctx: JobContext) -> RunResult:
        """Fetch the transcript and write it as JSON, plain text and SRT next to the job."""
        item = self.item(ctx)
        transcript = normalize_transcript(item)
        if transcript is None:
            # providers.md: transcript shapes unconfirmed; the seed says the transcript lives on
            # "the standard transcript endpoints" once published, so ask there.
            try:
                answer = ctx.client.json("GET", f"items/{ctx.remote_id}/transcript")
            except ProviderError as exc:
                if exc.status != 404:
                    raise
                answer = None
            transcript = normalize_transcript(answer) if answer is not None else None
        if transcript is None:
            # Published but no transcript yet (indexing lag): transient, so it is asked again
            # a few times before the job gives up.
            raise ProviderError(f"{LABEL} published item {ctx.remote_id} without a transcript yet.")
        if not ctx.params.get("diarize", True):
            transcript = drop_speakers(transcript)
        if not transcript.get("language") and ctx.params.get("language", "auto") != "auto":
            transcript["language"] = ctx.params["language"]
        duration = number(unwrap(item).get("duration"))
        if duration is None:
            ends = [s["end"] for s in transcript["segments"] if s.get("end") is not None]
            duration = max(ends) if ends else ctx.job.item.duration
        words = len(transcript["text"].split())
        statistics = {
            "words": words,
            "speakers": len(transcript["speakers"]),
            "duration": round(duration, 3) if duration is not None else None,
        }
        base = Path(ctx.job.item.original_filename or ctx.input_name).stem or "transcript"
        files = {
            "json": json.dumps(transcript, ensure_ascii=False, indent=2) + "\n",
            "txt": transcript_text(transcript),
            "srt": transcript_srt(transcript, duration),
        }
        outputs = []
        for fmt, content in files.items():
            filename = f"{base}.transcript.{fmt}"
            dest = ctx.output_path(filename)
            data = content.encode("utf-8")
            dest.write_bytes(data)
            # Transcripts are what this job produces, so they are media, not reports.
            outputs.append(
                Output(
                    format=fmt,
                    filename=filename,
                    path=dest,
                    size=len(data),
                    checksum=hashlib.sha256(data).hexdigest(),
                    statistics={"words": words, "segments": len(transcript["segments"])},
                    kind="media",
                )
            )
        return RunResult(outputs=outputs, statistics=statistics, transcript=transcript)

    def item(self, ctx: JobContext) -> dict[str, Any]:
        body = ctx.client.json("GET", f"items/{ctx.remote_id}")
        if not isinstance(body, dict):
            raise ProviderError(f"{LABEL} answered the item lookup with {str(body)[:100]}.")
        return body


# --- reading Audioscrape's answers (shapes unconfirmed: providers.md) -------------------------


def unwrap(body: Any) -> dict[str, Any]:
    """Return the item object of a body that may wrap it in `item` or `data`."""
    if not isinstance(body, dict):
        return {}
    for key in ("item", "data"):
        inner = body.get(key)
        if isinstance(inner, dict) and ("status" in inner or "id" in inner):
            return inner
    return body


def remote_status(body: Any) -> RemoteStatus:
    """Map an item's status word onto ours (any case; an unknown word is still running)."""
    item = unwrap(body)
    word = str(item.get("status") or "").strip().lower()
    if word in DONE_WORDS:
        return RemoteStatus(SUCCESS, 100, word)
    if word in FAILED_WORDS:
        reason = next(
            (
                str(item[k])
                for k in ("error", "error_message", "message", "detail")
                if isinstance(item.get(k), str) and item[k]
            ),
            "",
        )
        return RemoteStatus(
            FAILED, None, word, f"{LABEL} failed to transcribe the item: {reason or word}."
        )
    if word in STAGE_PROGRESS:
        return RemoteStatus(RUNNING, STAGE_PROGRESS[word], word)
    # An undocumented word (a later pipeline stage, a new queue state): still running; show it.
    return RemoteStatus(RUNNING, None, word[:30] or "processing")


def number(value: Any) -> float | None:
    """Return value as a float (numbers may come as strings), or None."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def normalize_segment(raw: Any) -> dict[str, Any] | None:
    """Return {speaker, start, end, text} from a segment in any of the likely spellings."""
    if not isinstance(raw, dict):
        return None
    text = next((raw[k] for k in ("text", "content", "transcript") if raw.get(k)), "")
    if not isinstance(text, str) or not text.strip():
        return None
    speaker = next(
        (raw[k] for k in ("speaker", "speaker_label", "speaker_name", "speaker_id") if raw.get(k)),
        None,
    )
    if isinstance(speaker, dict):
        speaker = speaker.get("name") or speaker.get("label") or speaker.get("id")
    start = next((number(raw[k]) for k in ("start", "start_time", "startTime") if k in raw), None)
    end = next((number(raw[k]) for k in ("end", "end_time", "endTime") if k in raw), None)
    return {
        "speaker": str(speaker) if speaker not in (None, "") else None,
        "start": start,
        "end": end,
        "text": text.strip(),
    }


def normalize_transcript(body: Any) -> dict[str, Any] | None:
    """Return {text, segments, speakers, language} from an item or transcript body, or None.

    Accepts `transcript` as text, as an object or as a list of segments, and `segments` at the
    top level or nested under `transcript` or `data`.
    """
    if not isinstance(body, dict):
        return None
    layers = [body]
    for key in ("item", "data", "transcript"):
        inner = body.get(key)
        if isinstance(inner, dict):
            layers.append(inner)
            layers.extend(v for k in ("data", "transcript") if isinstance(v := inner.get(k), dict))
    text = ""
    raw_segments: list[Any] = []
    speakers_given: list[Any] = []
    language = None
    for layer in layers:
        for key in ("transcript", "text", "full_text"):
            if not text and isinstance(layer.get(key), str):
                text = layer[key].strip()
        for key in ("segments", "transcript", "utterances"):
            if not raw_segments and isinstance(layer.get(key), list):
                raw_segments = layer[key]
        if not speakers_given and isinstance(layer.get("speakers"), list):
            speakers_given = layer["speakers"]
        if not language and isinstance(layer.get("language"), str):
            language = layer["language"] or None
    segments = [s for s in map(normalize_segment, raw_segments) if s is not None]
    if not text and not segments:
        return None
    if not text:
        text = " ".join(s["text"] for s in segments)
    speakers: list[str] = []
    for s in speakers_given:
        name = (s.get("name") or s.get("label") or s.get("id")) if isinstance(s, dict) else s
        if name not in (None, "") and str(name) not in speakers:
            speakers.append(str(name))
    for s in segments:
        if s["speaker"] and s["speaker"] not in speakers:
            speakers.append(s["speaker"])
    return {"text": text, "segments": segments, "speakers": speakers, "language": language}


def drop_speakers(transcript: dict[str, Any]) -> dict[str, Any]:
    """Return the transcript without speaker labels (the preset turned them off)."""
    segments = [{**s, "speaker": None} for s in transcript["segments"]]
    return {**transcript, "segments": segments, "speakers": []}


def transcript_text(transcript: dict[str, Any]) -> str:
    """Return the plain-text transcript: one line per speaker turn when speakers are known."""
    segments = transcript["segments"]
    if not segments or not any(s["speaker"] for s in segments):
        return transcript["text"] + "\n"
    lines: list[str] = []
    for s in segments:
        lines.append(f"{s['speaker']}: {s['text']}" if s["speaker"] else s["text"])
    return "\n".join(lines) + "\n"


def srt_time(seconds: float) -> str:
    """Return an SRT timestamp, e.g. 00:01:02,345."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def transcript_srt(transcript: dict[str, Any], duration: float | None) -> str:
    """Return SubRip subtitles from the segments (one cue for the whole text without them)."""
    segments = transcript["segments"] or [
        {"speaker": None, "start": 0.0, "end": duration or 0.0, "text": transcript["text"]}
    ]
    cues: list[str] = []
    previous_end = 0.0
    for n, s in enumerate(segments):
        start = s["start"] if s["start"] is not None else previous_end
        following = segments[n + 1]["start"] if n + 1 < len(segments) else None
        end = s["end"] if s["end"] is not None else following
        if end is None or end <= start:
            # No usable end: about a reading speed's worth of time, never backwards.
            end = start + max(1.0, 0.4 * len(s["text"].split()))
        previous_end = end
        text = f"{s['speaker']}: {s['text']}" if s["speaker"] else s["text"]
        cues.append(f"{len(cues) + 1}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n")
    return "\n".join(cues)
