"""Auphonic (audio post-production) as a remote provider: JSON API, API key or OAuth2 code flow.

Contract: ../shared/providers.md, section "Auphonic", and seeds/auphonic-api.txt ("the seed").
Every answer comes in the envelope {"status_code", "error_code", "error_message", "form_errors",
"data"}, errors included, so `classify_response` reads the provider's own words from it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from django.conf import settings

from media_jobs.providers.base import (
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
from media_jobs.providers.http import TRANSIENT_STATUSES, retry_after, upload

if TYPE_CHECKING:
    from media_jobs.models import ProviderAccount
    from media_jobs.providers.context import JobContext
    from media_jobs.providers.http import ProviderClient

# Resources are "a unique string of 22 characters out of [a-zA-Z0-9]" (seed, API overview).
UUID_RE = re.compile(r"^[A-Za-z0-9]{22}$")

# --- parameters: Auphonic's own names (seed, "Audio algorithms"; engine/params.py) ----------

# On/off algorithms. `hipfilter` is the older name of `filtering` (providers.md: names drift).
ALGORITHM_TOGGLES = frozenset(
    {
        "filtering", "hipfilter", "leveler", "autolevel", "normloudness", "denoise", "dehum",
        "debreath", "deverb", "gate", "crossgate", "silence_cutter", "filler_cutter",
        "cough_cutter", "music_cutter", "speech_isolation",
    }
)  # fmt: skip
# Settings of those algorithms. Their value domains are not in the public docs: accept any
# scalar and let Auphonic judge (its answer is a 400 with form_errors, classified permanent).
ALGORITHM_SETTINGS = frozenset(
    {
        "denoiseamount", "denoisemethod", "dehumamount", "dehumbase", "deverbamount",
        "debreathamount", "levelerstrength", "compressor", "musicgain", "backforeground",
        "bgreduction", "gatestrength", "loudnessmethod",
    }
)  # fmt: skip
LOUDNESS_TARGET = (-31.0, -13.0)  # LUFS (the brief; Auphonic offers -13 to -31)
MAX_PEAK = (-10.0, 0.0)  # dBTP; 0 means "automatic"

# Output formats from the seed ("Available output formats include"), plus the speech
# recognition results Auphonic delivers as output files (unconfirmed names: tolerated).
AUDIO_FORMATS = frozenset(
    {"mp3", "mp3-vbr", "vorbis", "opus", "aac", "flac", "alac", "wav", "wav-24bit"}
)
TEXT_FORMATS = frozenset({"speech", "transcript", "subtitle"})
OUTPUT_FORMATS = AUDIO_FORMATS | TEXT_FORMATS | {"video", "audiogram", "tracks"}
OUTPUT_KEYS = frozenset({"format", "bitrate", "filename", "suffix", "mono_mixdown", "ending"})
DEFAULT_OUTPUT = {"format": "mp3", "bitrate": 128}

# Metadata tags of the seed's "Audio Metadata" example.
METADATA_TEXT = frozenset(
    {
        "title", "artist", "album", "subtitle", "summary", "genre", "publisher", "url",
        "license", "license_url",
    }
)  # fmt: skip
METADATA_KEYS = METADATA_TEXT | {"track", "year", "tags", "location", "append_chapters"}
CHAPTER_KEYS = frozenset({"start", "title", "url", "image"})
CHAPTER_START_RE = re.compile(r"^\d{1,2}:\d{2}:\d{2}(\.\d{1,3})?$")  # HH:MM:ss[.mmm] (seed)
SPEECH_KEYS = frozenset({"language", "keywords", "shownotes", "uuid"})
PLAIN_NAME_RE = re.compile(r"^[^/\\\x00]{1,200}$")

# --- status codes (providers.md) -> our state, a derived progress, and the stage ----------

# Only Dolby reports a percentage (providers.md, general rules): the progress here is where
# each stage sits in Auphonic's pipeline. None keeps the job's current progress.
STATUSES: dict[int, tuple[str, int | None, str]] = {
    0: (RUNNING, 10, "File Upload"),
    1: (PENDING, 15, "Waiting"),
    2: (FAILED, None, "Error"),
    3: (SUCCESS, 100, "Done"),
    4: (RUNNING, 40, "Audio Processing"),
    5: (RUNNING, 70, "Audio Encoding"),
    6: (RUNNING, 90, "Outgoing File Transfer"),
    7: (RUNNING, 80, "Mono Mixdown"),
    8: (RUNNING, 85, "Split Audio"),
    # Not terminal (providers.md: "Terminal: 3 and 2"): a production we started that still
    # says so is waiting on Auphonic; the stall limit fails it if it never moves.
    9: (PENDING, None, "Incomplete"),
    10: (PENDING, None, "Not Started"),
    11: (RUNNING, None, "Outdated"),
    12: (RUNNING, 20, "Incoming File Transfer"),
    13: (RUNNING, None, "Stopping"),
    14: (RUNNING, 60, "Speech Recognition"),
}
# A production in one of these has not been started yet (a resumed submit must start it).
NOT_STARTED = frozenset({0, 9, 10})

# statistics.levels names (providers.md: `[value, unit]` pairs) -> our statistics names.
LEVEL_NAMES = {
    "loudness": "integrated",
    "lra": "lra",
    "peak": "true_peak",
    "max_momentary": "max_momentary",
    "max_shortterm": "max_shortterm",
    "noise_level": "noise_level",
    "snr": "snr",
}


class AuphonicProvider(Provider):
    kind = "auphonic"
    label = "Auphonic"
    auth_kinds = ("api_key", "oauth2_code")
    can_cancel = True  # POST production/{uuid}/stop.json (seed)
    has_webhooks = True  # form-encoded POST uuid/status/status_string when done (seed)
    parameters = (
        Param(
            "algorithms",
            dict,
            "Audio algorithms",
            help="Auphonic's names: filtering, leveler, normloudness, loudnesstarget (-31..-13), "
            "maxpeak, denoise, denoiseamount, gate, crossgate, silence_cutter, filler_cutter, "
            "cough_cutter, ...",
        ),
        Param(
            "output_files",
            list,
            "Output files",
            help="[{format, bitrate, filename, suffix, mono_mixdown, ending}]; one MP3 when "
            "neither these nor a preset give any.",
        ),
        Param("metadata", dict, "Metadata tags", help="title (default: the item's), artist, ..."),
        Param("chapters", list, "Chapter marks", help='[{"start": "00:01:30", "title": "..."}]'),
        Param(
            "speech_recognition",
            dict,
            "Speech recognition",
            help="{language, keywords, shownotes}; the transcript is stored on the item.",
        ),
        Param("preset", str, "Auphonic preset", help="UUID of a preset in the Auphonic account."),
    )
    credential_fields = (
        CredentialField(
            "api_key",
            "API key",
            help="From your Auphonic account page. Or connect with the Connect button (OAuth2).",
        ),
    )

    # --- presets -------------------------------------------------------------------------

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return normalised parameters or raise ValueError naming every bad value."""
        clean = validate_declared(self.parameters, params)
        errors: list[str] = []
        if "algorithms" in clean:
            clean["algorithms"] = _algorithms(clean["algorithms"], errors)
        if "output_files" in clean:
            clean["output_files"] = _outputs(clean["output_files"], errors)
        elif "preset" not in clean:
            # Without a preset Auphonic has nothing to render: ask for something sensible.
            clean["output_files"] = [dict(DEFAULT_OUTPUT)]
        if "metadata" in clean:
            _check_metadata(clean["metadata"], errors)
        if "chapters" in clean:
            _check_chapters(clean["chapters"], errors)
        if "speech_recognition" in clean:
            _check_speech(clean["speech_recognition"], errors)
        if "preset" in clean and not UUID_RE.match(clean["preset"]):
            errors.append("preset: must be an Auphonic UUID (22 letters and digits)")
        if errors:
            raise ValueError("; ".join(errors))
        return clean

    # --- accounts ------------------------------------------------------------------------

    def auth_headers(self, account: ProviderAccount) -> dict[str, str]:
        """Return `bearer <api_key>`, or `Bearer <access token>` for an OAuth2 account."""
        if account.auth_kind == "oauth2_code":
            from media_jobs import connections

            token = connections.refreshed_token(
                account,
                self.oauth_token_url(),
                self.label,
                **self.oauth_client(redirect_uri=connections.callback_url(self.kind)),
            )
            return {"Authorization": f"Bearer {token}"}
        key = account.credentials.get("api_key", "")
        if not key:
            raise ProviderError("The Auphonic account has no API key.", auth=True)
        # The seed writes the scheme in lower case for API keys; both cases work.
        return {"Authorization": f"bearer {key}"}

    def check_account(self, client: ProviderClient) -> str:
        """Return the account's user name (GET user.json, providers.md)."""
        data = envelope_data(client.json("GET", "user.json"), "the account check")
        return str(data.get("username") or data.get("email") or "Auphonic account")

    def oauth_client(self, redirect_uri: str) -> dict[str, str]:
        """Return our registered OAuth2 app, for the authorization-code flow."""
        return {
            "client_id": settings.AUPHONIC_CLIENT_ID,
            "client_secret": settings.AUPHONIC_CLIENT_SECRET,
            "redirect_uri": redirect_uri,
            # The seed posts client_id and client_secret as form fields to oauth2/token/.
            "token_endpoint_auth_method": "client_secret_post",
        }

    def oauth_authorize_url(self) -> str:
        return settings.PROVIDER_BASE_URLS["auphonic_oauth"].rstrip("/") + "/authorize/"

    def oauth_token_url(self) -> str:
        return settings.PROVIDER_BASE_URLS["auphonic_oauth"].rstrip("/") + "/token/"

    # --- answers -------------------------------------------------------------------------

    def classify_response(self, response: requests.Response) -> ProviderError | None:
        """Classify a non-2xx answer using the envelope's error_message and form_errors."""
        status = response.status_code
        text = envelope_error(response)
        if status == 401:
            # "401 Unauthorized: Invalid or missing API key/token" (seed, error codes).
            return ProviderError(
                f"Auphonic refused the account's credentials (401: {text}). Reconnect the account.",
                auth=True,
            )
        if status == 403:
            # "403 Forbidden: Insufficient permissions or credits" (seed): retrying the same
            # production cannot help, but the account itself still works: no disabling.
            return ProviderError(f"Auphonic refused the production (403: {text}).", permanent=True)
        if status in TRANSIENT_STATUSES:
            # 429 "Rate limit exceeded" (seed) and 5xx/408: try later, as long as asked.
            return ProviderError(
                f"Auphonic is unavailable ({status}: {text}).", retry_after=retry_after(response)
            )
        if 400 <= status < 500:
            # 400 "Invalid JSON or missing required parameters" (with form_errors), 404 "Invalid
            # UUID or resource doesn't exist", 413 "File size exceeds limits" (seed): the same
            # request would be refused again.
            return ProviderError(
                f"Auphonic rejected the request ({status}: {text}).", permanent=True
            )
        return None  # anything else: the seam's default rules

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, ctx: JobContext) -> str:
        """Create the production, upload the input unless Auphonic fetches it, then start it."""
        uuid = ctx.remote_id
        input_url = ctx.input_url()
        if uuid and not ctx.state.get("started"):
            # Resumed: a crash may have hit after a step succeeded but before we noted it.
            status = production_status(ctx.client, uuid)
            if status not in NOT_STARTED:
                ctx.save_state(uploaded=True, started=True)
                return uuid
        if not uuid:
            body = envelope_data(
                ctx.client.json(
                    "POST", "productions.json", json=self.production_payload(ctx, input_url)
                ),
                "the new production",
            )
            uuid = str(body.get("uuid") or "")
            if not uuid:
                raise ProviderError("Auphonic created a production but sent no UUID.")
            # At once: a retry must find this production instead of creating a second one.
            ctx.save_remote_id(uuid)
        if input_url is None and not ctx.state.get("uploaded"):
            # Local storage has no URL Auphonic can fetch: upload the file (multipart).
            upload(
                ctx.client,
                "POST",
                f"production/{uuid}/upload.json",
                fields={},
                files={"input_file": (ctx.input_name, ctx.input_path, "application/octet-stream")},
            )
            ctx.save_state(uploaded=True)
        if not ctx.state.get("started"):
            ctx.client.request("POST", f"production/{uuid}/start.json")
            ctx.save_state(started=True)
        return uuid

    def production_payload(self, ctx: JobContext, input_url: str | None) -> dict[str, Any]:
        """Return the JSON that creates the production (providers.md: POST productions.json)."""
        params = ctx.params
        item = ctx.job.item
        metadata = dict(params.get("metadata") or {})
        metadata.setdefault("title", item.title)
        if item.description:
            metadata.setdefault("summary", item.description)
        payload: dict[str, Any] = {"metadata": metadata}
        for key in ("preset", "algorithms", "chapters", "speech_recognition"):
            if params.get(key):
                payload[key] = params[key]
        outputs = [dict(o) for o in params.get("output_files") or []]
        if (
            outputs  # else the Auphonic preset's own outputs apply: don't replace them
            and params.get("speech_recognition")
            and not any(o["format"] in TEXT_FORMATS for o in outputs)
        ):
            # The transcript arrives as an output file: ask for it in a form we can read.
            outputs.append({"format": "speech", "ending": "json"})
        if outputs:
            payload["output_files"] = outputs
        payload["webhook"] = ctx.webhook_url
        if input_url is not None:
            payload["input_file"] = input_url  # Auphonic fetches it: no upload step
        return payload

    def poll(self, ctx: JobContext) -> RemoteStatus:
        """Return the production's state from GET production/{uuid}/status.json."""
        data = envelope_data(
            ctx.client.json("GET", f"production/{ctx.remote_id}/status.json"), "the status"
        )
        code = data.get("status")
        words = str(data.get("status_string") or "")
        if not isinstance(code, int) or code not in STATUSES:
            # providers.md: unknown statuses mean "still running", never "failed".
            return RemoteStatus(RUNNING, None, words or f"status {code}")
        state, progress, name = STATUSES[code]
        if state == FAILED:
            return RemoteStatus(FAILED, None, words or name, self.error_message(ctx))
        return RemoteStatus(state, progress, words or name)

    def error_message(self, ctx: JobContext) -> str:
        """Return why a production failed (its error_message, in production/{uuid}.json)."""
        production = envelope_data(
            ctx.client.json("GET", f"production/{ctx.remote_id}.json"), "the production"
        )
        text = str(production.get("error_message") or "").strip()
        return f"Auphonic: {text}" if text else "Auphonic reports the production failed."

    def collect(self, ctx: JobContext) -> RunResult:
        """Download every result file and map the production's statistics into ours."""
        uuid = ctx.remote_id
        production = envelope_data(
            ctx.client.json("GET", f"production/{uuid}.json"), "the production"
        )
        levels = (production.get("statistics") or {}).get("levels") or {}
        before, after = map_levels(levels.get("input")), map_levels(levels.get("output"))
        gain = after.pop("gain_mean", None)
        outputs: list[Output] = []
        transcript: Any = None
        for spec in production.get("output_files") or []:
            filename = Path(str(spec.get("filename") or "")).name
            if not filename:
                continue  # not rendered (e.g. an outgoing-only target)
            output = self.fetch_output(ctx, uuid, spec, filename, after)
            outputs.append(output)
            if output.kind == "report" and transcript is None:
                transcript = read_transcript(output, ctx.params.get("speech_recognition") or {})
        if not outputs:
            raise ProviderError("Auphonic finished the production without any result file.")
        algorithms = production.get("algorithms") or {}
        length = _number(production.get("length"))
        if length is not None:
            before.setdefault("duration", round(length, 3))
        statistics: dict[str, Any] = {
            "input": before,
            "output": after,
            "gain": gain,
            "target": _number(algorithms.get("loudnesstarget")),
            "max_peak": _number(algorithms.get("maxpeak")),
            "length": length,
            "used_credits": production.get("used_credits"),
            "warnings": [w for w in [production.get("warning_message")] if w],
            "auphonic_uuid": uuid,
        }
        return RunResult(outputs=outputs, statistics=statistics, transcript=transcript)

    def fetch_output(
        self,
        ctx: JobContext,
        uuid: str,
        spec: dict[str, Any],
        filename: str,
        levels: dict[str, Any],
    ) -> Output:
        """Download one result file (following Auphonic's redirect) and check what arrived."""
        url = str(spec.get("download_url") or "")
        if not url.startswith(ctx.client.base_url.rstrip("/") + "/"):
            # Our credentials go only to our Auphonic base URL, never to a host named in a body.
            url = f"download/audio-result/{uuid}/{quote(filename)}"
        dest = ctx.output_path(filename)
        size, sha256 = ctx.client.download(url, dest)
        expected = spec.get("size")
        if isinstance(expected, int) and expected != size:
            raise ProviderError(f"Auphonic sent {size} of {expected} bytes of {filename}.")
        checksum = str(spec.get("checksum") or "")
        if re.fullmatch(r"[0-9a-fA-F]{32}", checksum) and md5_of(dest) != checksum.lower():
            # Unconfirmed which digest Auphonic lists; an MD5-shaped one is checked.
            raise ProviderError(f"The download of {filename} from Auphonic is corrupt.")
        fmt = str(spec.get("format") or Path(filename).suffix.lstrip(".") or "file")
        if fmt in TEXT_FORMATS:
            return Output(fmt, filename, dest, size, sha256, {}, kind="report")
        stats = dict(levels)
        if spec.get("bitrate") not in (None, ""):
            stats["bitrate"] = _number(spec.get("bitrate"))
        stats.update(probe_facts(dest))
        return Output(fmt, filename, dest, size, sha256, stats)

    def cancel(self, ctx: JobContext) -> None:
        """Stop the production (POST production/{uuid}/stop.json)."""
        ctx.client.request("POST", f"production/{ctx.remote_id}/stop.json")


# --- the envelope ------------------------------------------------------------------------


def envelope_data(body: Any, what: str) -> dict[str, Any]:
    """Return the envelope's data; an error inside a 2xx answer is still Auphonic saying no."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        # Not Auphonic's envelope (a proxy's page, a truncated answer): worth another try.
        raise ProviderError(f"Auphonic answered {what} without its usual envelope.")
    code = body.get("status_code")
    if isinstance(code, int) and code >= 400:
        message = envelope_text(body) or f"status {code}"
        raise ProviderError(f"Auphonic rejected {what} ({code}: {message}).", permanent=True)
    return body["data"]


def envelope_text(body: dict[str, Any]) -> str:
    """Return the envelope's error_message with its form_errors, field by field."""
    parts = []
    message = body.get("error_message")
    if isinstance(message, str) and message.strip():
        parts.append(message.strip())
    form = body.get("form_errors")
    if isinstance(form, dict):
        for field, problems in form.items():
            if isinstance(problems, list):
                problems = "; ".join(str(p) for p in problems)
            elif isinstance(problems, dict):
                problems = json.dumps(problems, sort_keys=True)
            parts.append(f"{field}: {problems}")
    return " ".join(parts)


def envelope_error(response: requests.Response) -> str:
    """Return the most useful words of an error answer (envelope, or whatever came back)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason
    if isinstance(body, dict):
        text = envelope_text(body) or str(body.get("error") or body.get("detail") or "")
        if text:
            return text[:1000]
    return str(body)[:300]


def production_status(client: ProviderClient, uuid: str) -> int | None:
    """Return a production's status code."""
    data = envelope_data(client.json("GET", f"production/{uuid}/status.json"), "the status")
    code = data.get("status")
    return code if isinstance(code, int) else None


# --- statistics and results ----------------------------------------------------------------


def map_levels(levels: Any) -> dict[str, Any]:
    """Return Auphonic's `{"loudness": [-16.0, "LUFS"], ...}` as `{"integrated": -16.0, ...}`."""
    if not isinstance(levels, dict):
        return {}
    mapped: dict[str, Any] = {}
    for name, pair in levels.items():
        value = pair[0] if isinstance(pair, list | tuple) and pair else pair
        number = _number(value)
        if number is not None or value is None:
            mapped[LEVEL_NAMES.get(name, name)] = number
    return mapped


def probe_facts(path: Path) -> dict[str, Any]:
    """Return the duration, sample rate and channels of a collected file (empty if unknown)."""
    from media_jobs import engine

    try:
        facts = engine.probe(path)
    except engine.EngineError:
        return {}
    return {
        "duration": round(facts.duration, 3),
        "sample_rate": facts.sample_rate,
        "channels": facts.channels,
    }


def read_transcript(output: Output, speech: dict[str, Any]) -> Any:
    """Return a speech-recognition result file as the item's transcript."""
    text = output.path.read_text(encoding="utf-8", errors="replace")
    if output.path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if speech.get("language"):
                data.setdefault("language", speech["language"])
            return data
    return {"format": output.path.suffix.lstrip(".").lower(), "text": text}


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _number(value: Any) -> float | None:
    """Return a number from a JSON number or numeric string (Auphonic sends "128")."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- parameter checks --------------------------------------------------------------------


def _algorithms(section: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """Check algorithm names and values; return them with `hipfilter` as `filtering`."""
    clean: dict[str, Any] = {}
    for name, value in section.items():
        where = f"algorithms.{name}"
        if name in ALGORITHM_TOGGLES:
            if not isinstance(value, bool):
                errors.append(f"{where}: expected true or false, not {value!r}")
            clean[name] = value
        elif name in ("loudnesstarget", "maxpeak"):
            low, high = LOUDNESS_TARGET if name == "loudnesstarget" else MAX_PEAK
            number = _number(value)
            if number is None:
                errors.append(f"{where}: expected a number, not {value!r}")
            elif not low <= number <= high:
                errors.append(f"{where}: {number:g} is outside {low:g}..{high:g}")
            clean[name] = number if number is None or number != int(number) else int(number)
        elif name in ALGORITHM_SETTINGS:
            if isinstance(value, bool | dict | list) or value is None:
                errors.append(f"{where}: expected a number or a word, not {value!r}")
            clean[name] = value
        else:
            errors.append(f"{where}: unknown Auphonic algorithm")
    if "hipfilter" in clean:
        old = clean.pop("hipfilter")
        if clean.setdefault("filtering", old) != old:
            errors.append("algorithms: filtering and hipfilter (its old name) disagree")
    return clean


def _outputs(outputs: list[Any], errors: list[str]) -> list[dict[str, Any]]:
    """Check each output file's format and options."""
    if not outputs:
        errors.append("output_files: must list at least one output file")
    clean = []
    for index, spec in enumerate(outputs):
        where = f"output_files[{index}]"
        if not isinstance(spec, dict):
            errors.append(f"{where}: must be an object")
            continue
        for key in sorted(set(spec) - OUTPUT_KEYS):
            errors.append(f"{where}.{key}: unknown option")
        fmt = spec.get("format")
        if fmt not in OUTPUT_FORMATS:
            errors.append(
                f"{where}.format: {fmt!r} is not one of {', '.join(sorted(OUTPUT_FORMATS))}"
            )
        item = {k: v for k, v in spec.items() if k in OUTPUT_KEYS}
        if "bitrate" in spec:
            bitrate = _number(spec["bitrate"])
            if bitrate is None or bitrate != int(bitrate) or not 8 <= bitrate <= 512:
                errors.append(f"{where}.bitrate: expected kbps between 8 and 512")
            else:
                item["bitrate"] = int(bitrate)
        for key in ("filename", "suffix", "ending"):
            value = spec.get(key)
            if value is not None and (
                not isinstance(value, str)
                or not PLAIN_NAME_RE.match(value)
                or value.strip(".") == ""
            ):
                errors.append(f"{where}.{key}: must be a plain file name, not {value!r}")
        if "mono_mixdown" in spec and not isinstance(spec["mono_mixdown"], bool):
            errors.append(f"{where}.mono_mixdown: expected true or false")
        clean.append(item)
    return clean


def _check_metadata(metadata: dict[str, Any], errors: list[str]) -> None:
    for key, value in metadata.items():
        where = f"metadata.{key}"
        if key not in METADATA_KEYS:
            errors.append(f"{where}: unknown tag (known: {', '.join(sorted(METADATA_KEYS))})")
        elif key in METADATA_TEXT and not isinstance(value, str):
            errors.append(f"{where}: expected text")
        elif key in ("track", "year") and (isinstance(value, bool) or _number(value) is None):
            errors.append(f"{where}: expected a number")
        elif key == "tags" and not (
            isinstance(value, list) and all(isinstance(t, str) for t in value)
        ):
            errors.append(f"{where}: expected a list of words")
        elif key == "append_chapters" and not isinstance(value, bool):
            errors.append(f"{where}: expected true or false")
        elif key == "location" and not (
            isinstance(value, dict) and set(value) <= {"latitude", "longitude"}
        ):
            errors.append(f"{where}: expected {{latitude, longitude}}")


def _check_chapters(chapters: list[Any], errors: list[str]) -> None:
    for index, chapter in enumerate(chapters):
        where = f"chapters[{index}]"
        if not isinstance(chapter, dict):
            errors.append(f"{where}: must be an object")
            continue
        for key in sorted(set(chapter) - CHAPTER_KEYS):
            errors.append(f"{where}.{key}: unknown option")
        if not CHAPTER_START_RE.match(str(chapter.get("start", ""))):
            errors.append(f"{where}.start: expected HH:MM:SS[.mmm]")
        if not isinstance(chapter.get("title", ""), str):
            errors.append(f"{where}.title: expected text")


def _check_speech(speech: dict[str, Any], errors: list[str]) -> None:
    for key in sorted(set(speech) - SPEECH_KEYS):
        errors.append(f"speech_recognition.{key}: unknown option")
    if "language" in speech and not isinstance(speech["language"], str):
        errors.append("speech_recognition.language: expected a language code such as 'en'")
    keywords = speech.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        errors.append("speech_recognition.keywords: expected a list of words")
    if "shownotes" in speech and not isinstance(speech["shownotes"], bool):
        errors.append("speech_recognition.shownotes: expected true or false")
