"""The one HTTP seam for talking to remote providers: timeouts, streaming, error classification."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import requests

from media_jobs.providers.base import ProviderError

if TYPE_CHECKING:
    from media_jobs.providers.base import Provider

log = logging.getLogger(__name__)

USER_AGENT = "mediahub/1.0 (+self-hosted media hub)"
# (connect, read) seconds: a provider that stalls is a transient error, not a stuck worker.
TIMEOUT = (10, 120)
CHUNK = 1024 * 1024
# HTTP statuses that mean "try again later" for every provider (their own rules come on top).
TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# One file of a multipart upload: (filename, local path) or (filename, local path, content type).
FileSpec = tuple[str, Path] | tuple[str, Path, str]


def retry_after(response: requests.Response) -> float | None:
    """Return the seconds a Retry-After header asks for (delta or HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_text(response: requests.Response) -> str:
    """Return the most useful message a provider put in an error response."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason
    if isinstance(body, dict):
        for key in ("error_message", "detail", "message", "error", "title"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict):
                inner = value.get("detail") or value.get("title") or value.get("message")
                if inner:
                    return str(inner)
            if isinstance(value, list) and value:
                # FastAPI's 422: [{"loc": [...], "msg": "..."}]
                first = value[0]
                return first.get("msg", str(first)) if isinstance(first, dict) else str(first)
    return str(body)[:300]


def classify(response: requests.Response, label: str) -> ProviderError:
    """Return the default classification of a non-2xx answer (adapters refine it)."""
    status = response.status_code
    text = error_text(response)
    if status == 401:
        return ProviderError(
            f"{label} refused the account's credentials ({status}: {text}). Reconnect the account.",
            auth=True,
            status=status,
        )
    if status in TRANSIENT_STATUSES:
        return ProviderError(
            f"{label} is unavailable ({status}: {text}).",
            retry_after=retry_after(response),
            status=status,
        )
    return ProviderError(
        f"{label} rejected the request ({status}: {text}).", permanent=True, status=status
    )


class ProviderClient:
    """Authenticated HTTP to one provider account; every outbound provider call passes here."""

    def __init__(
        self,
        provider: Provider,
        headers: Callable[[], dict[str, str]] | None = None,
        base_url: str | None = None,
        session: requests.Session | None = None,
        account: Any = None,
    ):
        self.provider = provider
        self.account = account  # the ProviderAccount whose credentials sign the requests
        self.base_url = base_url or provider.base_url()
        self._headers = headers or dict
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def url(self, path: str) -> str:
        """Return an absolute URL for a path relative to the provider's base URL."""
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url.rstrip("/") + "/", path.lstrip("/"))

    def auth_headers(self) -> dict[str, str]:
        """Return the headers that authenticate this client's requests (to name an account)."""
        return self._headers()

    def request(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> requests.Response:
        """Send one request; raise ProviderError (classified) for anything but 2xx."""
        headers = {**(self._headers() if auth else {}), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", TIMEOUT)
        url = self.url(path)
        try:
            response = self.session.request(method, url, headers=headers, **kwargs)
        except requests.Timeout as exc:
            raise ProviderError(f"{self.provider.label} timed out ({method} {path}).") from exc
        except requests.ConnectionError as exc:
            raise ProviderError(
                f"Could not reach {self.provider.label}: {exc.__class__.__name__}."
            ) from exc
        if response.status_code >= 300:
            log.info("%s %s %s -> %s", self.provider.kind, method, path, response.status_code)
            raise self.provider_error(response)
        return response

    def provider_error(self, response: requests.Response) -> ProviderError:
        """Let the adapter classify the answer, else apply the default rules."""
        custom = getattr(self.provider, "classify_response", None)
        error = custom(response) if custom else None
        return error or classify(response, self.provider.label)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON body (a non-JSON body is a transient error)."""
        return self.json_of(self.request(method, path, **kwargs))

    def json_of(self, response: requests.Response) -> Any:
        """Return the JSON body of an answer (a non-JSON body is a transient error)."""
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(
                f"{self.provider.label} answered with something that is not JSON."
            ) from exc

    def download(self, url: str, dest: Path, *, auth: bool = True) -> tuple[int, str]:
        """Stream a result file to dest; return its size and SHA-256."""
        digest = hashlib.sha256()
        size = 0
        response = self.request("GET", url, auth=auth, stream=True)
        with response, dest.open("wb") as out:
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()


def oauth_session(**kwargs: Any):
    """Return an OAuth2 client session (Authlib) that speaks through this seam's defaults."""
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(**kwargs)
    session.headers["User-Agent"] = USER_AGENT
    session.register_compliance_hook("access_token_response", raise_unless_oauth_answer)
    session.register_compliance_hook("refresh_token_response", raise_unless_oauth_answer)
    session.default_timeout = TIMEOUT
    return session


def oauth_error(exc: Exception, label: str) -> ProviderError:
    """Classify a failed token request: refused credentials are an auth error, others transient."""
    from authlib.integrations.base_client import OAuthError

    if isinstance(exc, OAuthError):
        return ProviderError(
            f"{label} refused the token request ({exc.error}: {exc.description or ''}). "
            "Reconnect the account.",
            auth=True,
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return classify(exc.response, label)
    if isinstance(exc, requests.RequestException):
        return ProviderError(f"Could not reach {label} for a token: {exc.__class__.__name__}.")
    raise exc


def multipart(fields: dict[str, str], files: dict[str, FileSpec]):
    """Return a streaming multipart/form-data body (requests' `files=` reads it into memory).

    files maps a field name to (filename, local path), or (filename, local path, content type)
    when the provider wants a given type rather than the one guessed from the filename; the
    encoder reads each file as it sends.
    """
    import mimetypes

    from requests_toolbelt.multipart.encoder import MultipartEncoder

    parts: dict[str, Any] = {name: str(value) for name, value in fields.items()}
    opened = []
    try:
        for name, (filename, path, *content_type) in files.items():
            # Servers read a backslash as a Windows folder and keep only what follows it.
            filename = filename.replace("\\", "_")
            mime = content_type[0] if content_type else mimetypes.guess_type(filename)[0]
            opened.append(path.open("rb"))
            parts[name] = (filename, opened[-1], mime or "application/octet-stream")
        return MultipartEncoder(fields=parts)
    except BaseException:
        for handle in opened:
            handle.close()
        raise


def upload(
    client: ProviderClient,
    method: str,
    path: str,
    *,
    fields: dict[str, str],
    files: dict[str, FileSpec],
    **kwargs: Any,
) -> requests.Response:
    """Send a multipart upload through the client, streamed from disk with a Content-Length."""
    body = multipart(fields, files)
    headers = {**kwargs.pop("headers", {}), "Content-Type": body.content_type}
    try:
        return client.request(method, path, data=body, headers=headers, **kwargs)
    finally:
        for value in body.fields.values():
            if isinstance(value, tuple):
                value[1].close()


def raise_unless_oauth_answer(response: requests.Response) -> requests.Response:
    """Raise HTTPError for token answers Authlib would misread (it trusts any JSON with "error").

    A 429/5xx is an outage, not a refusal; an error body without OAuth's `error` field (Dolby's
    problem shape) would otherwise be taken for a token.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code in TRANSIENT_STATUSES or (
        response.status_code >= 400 and not (isinstance(body, dict) and "error" in body)
    ):
        response.raise_for_status()
    return response
