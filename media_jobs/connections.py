"""Provider accounts: connect, test, disconnect, OAuth2 flows, tokens and their renewal."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Workspace
from media_jobs.models import Job, ProviderAccount
from media_jobs.providers import get_provider
from media_jobs.providers.base import Provider, ProviderError
from media_jobs.providers.http import ProviderClient, oauth_error, oauth_session

log = logging.getLogger(__name__)

# Renew a cached access token this long before it expires, so no request carries a dying one.
TOKEN_MARGIN = timedelta(seconds=120)
RECONNECT = "The provider refused this account; reconnect the account."


class AccountError(ValueError):
    """The account details are incomplete or wrong."""


def account_client(account: ProviderAccount) -> ProviderClient:
    """Return the HTTP client for an account (headers computed, tokens renewed, per call)."""
    provider = get_provider(account.provider)
    return ProviderClient(provider, headers=lambda: provider.auth_headers(account), account=account)


def remote_provider(kind: str) -> Provider:
    try:
        provider = get_provider(kind)
    except KeyError as exc:
        raise AccountError(f"Unknown provider {kind!r}.") from exc
    if provider.inline:
        raise AccountError(f"{provider.label} needs no account.")
    return provider


def account_create(
    *,
    workspace: Workspace,
    provider: str,
    credentials: dict[str, Any],
    label: str = "",
    auth_kind: str = "",
) -> ProviderAccount:
    """Create an account from typed-in credentials (API keys, app key and secret)."""
    adapter = remote_provider(provider)
    auth_kind = auth_kind or adapter.auth_kinds[0]
    if auth_kind not in adapter.auth_kinds:
        raise AccountError(
            f"{adapter.label} accounts connect with {', '.join(adapter.auth_kinds)}, "
            f"not {auth_kind}."
        )
    if auth_kind == ProviderAccount.AuthKind.OAUTH2_CODE:
        raise AccountError(f"Connect {adapter.label} with the Connect button (OAuth2).")
    fields = {f.name: f for f in adapter.credential_fields}
    unknown = sorted(set(credentials) - set(fields))
    if unknown:
        raise AccountError(f"Unknown credential fields: {', '.join(unknown)}.")
    missing = [
        f.label
        for f in fields.values()
        if f.required and not str(credentials.get(f.name, "")).strip()
    ]
    if missing:
        raise AccountError(f"Missing: {', '.join(missing)}.")
    clean = {k: str(v).strip() for k, v in credentials.items() if str(v).strip()}
    return ProviderAccount.objects.create(
        workspace=workspace,
        provider=provider,
        auth_kind=auth_kind,
        credentials=clean,
        label=label or adapter.label,
    )


def account_test(*, account: ProviderAccount) -> str:
    """Make a cheap authenticated call; record who the provider says the account is."""
    provider = get_provider(account.provider)
    try:
        identity = provider.check_account(account_client(account))
    except ProviderError as exc:
        if exc.auth:
            account_disable(account=account, reason=exc.message)
        else:
            ProviderAccount.objects.filter(pk=account.pk).update(last_error=exc.message)
        raise
    ProviderAccount.objects.filter(pk=account.pk).update(
        identity=identity[:200], disabled=False, last_error=""
    )
    account.identity, account.disabled, account.last_error = identity[:200], False, ""
    return identity


def account_disable(*, account: ProviderAccount, reason: str) -> list[int]:
    """Disable an account the provider refused, and fail its running jobs; return their ids."""
    from media_jobs.services import job_fail

    ProviderAccount.objects.filter(pk=account.pk).update(disabled=True, last_error=reason[:2000])
    account.disabled, account.last_error = True, reason[:2000]
    failed = []
    for job in Job.objects.filter(provider_account=account, status__in=Job.ACTIVE):
        if job_fail(
            job=job,
            token=None,
            message=f"{reason} ({RECONNECT})" if RECONNECT not in reason else reason,
        ):
            failed.append(job.pk)
    return failed


def account_disconnect(*, account: ProviderAccount) -> None:
    """Forget an account and its secrets; its finished jobs keep their results."""
    with transaction.atomic():
        for job in Job.objects.filter(provider_account=account, status__in=Job.ACTIVE):
            from media_jobs.services import job_fail

            job_fail(job=job, token=None, message="The provider account was disconnected.")
        account.delete()


def save_token(account: ProviderAccount, token: dict[str, Any]) -> None:
    """Store a fresh token (encrypted with the other credentials) and its expiry."""
    expires_at = token.get("expires_at")
    if not expires_at and token.get("expires_in"):
        expires_at = timezone.now().timestamp() + float(token["expires_in"])
    creds = dict(account.credentials)
    creds["access_token"] = token["access_token"]
    if token.get("refresh_token"):
        creds["refresh_token"] = token["refresh_token"]
    expiry = datetime.fromtimestamp(float(expires_at), tz=UTC) if expires_at else None
    account.credentials, account.token_expires_at = creds, expiry
    ProviderAccount.objects.filter(pk=account.pk).update(credentials=creds, token_expires_at=expiry)


def token_fresh(account: ProviderAccount) -> bool:
    """Return whether the cached access token will live past the renewal margin."""
    if not account.credentials.get("access_token"):
        return False
    if account.token_expires_at is None:
        return True
    return account.token_expires_at - TOKEN_MARGIN > timezone.now()


def client_credentials_token(account: ProviderAccount, token_url: str, label: str) -> str:
    """Return a cached access token, fetching a new one (client credentials) before expiry."""
    if token_fresh(account):
        return account.credentials["access_token"]
    session = oauth_session(
        client_id=account.credentials.get("app_key", ""),
        client_secret=account.credentials.get("app_secret", ""),
        token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
    )
    try:
        token = session.fetch_token(token_url, grant_type="client_credentials")
    except Exception as exc:
        raise oauth_error(exc, label) from exc
    save_token(account, token)
    return token["access_token"]


def refreshed_token(account: ProviderAccount, token_url: str, label: str, **client: str) -> str:
    """Return the account's access token, refreshing an expiring one when a refresh token exists."""
    if token_fresh(account):
        return account.credentials["access_token"]
    refresh = account.credentials.get("refresh_token")
    if not refresh:
        raise ProviderError(f"The {label} access token expired.", auth=True)
    session = oauth_session(**client)
    try:
        token = session.refresh_token(token_url, refresh_token=refresh)
    except Exception as exc:
        raise oauth_error(exc, label) from exc
    save_token(account, token)
    return token["access_token"]


# --- OAuth2 authorization-code flow (Auphonic) -------------------------------------------


SESSION_KEY = "oauth2_connect"


def oauth_start(*, provider: str, workspace: Workspace, request) -> str:
    """Return the provider's authorization URL; the state goes into the user's session."""
    adapter = remote_provider(provider)
    state = secrets.token_urlsafe(24)
    request.session[SESSION_KEY] = {"state": state, "provider": provider, "workspace": workspace.pk}
    session = oauth_session(**adapter.oauth_client(redirect_uri=callback_url(provider)))
    url, _ = session.create_authorization_url(adapter.oauth_authorize_url(), state=state)
    return url


def callback_url(provider: str) -> str:
    from django.urls import reverse

    return settings.SITE_URL + reverse("provider-oauth-callback", args=[provider])


class StateMismatch(Exception):
    """The callback's state is not the one we sent (forged or replayed)."""


def oauth_finish(
    *, provider: str, request, code: str, state: str, label: str = ""
) -> ProviderAccount:
    """Exchange the code for a token and create the account; refuse a state we did not send."""
    expected = request.session.pop(SESSION_KEY, None) or {}
    if (
        not state
        or not secrets.compare_digest(str(expected.get("state", "")), state)
        or (expected.get("provider") != provider)
    ):
        raise StateMismatch
    adapter = remote_provider(provider)
    session = oauth_session(**adapter.oauth_client(redirect_uri=callback_url(provider)))
    try:
        token = session.fetch_token(
            adapter.oauth_token_url(), code=code, grant_type="authorization_code"
        )
    except Exception as exc:
        raise oauth_error(exc, adapter.label) from exc
    account = ProviderAccount(
        workspace_id=expected["workspace"],
        provider=provider,
        auth_kind=ProviderAccount.AuthKind.OAUTH2_CODE,
        credentials={},
        label=label or adapter.label,
    )
    account.save()
    save_token(account, token)
    try:
        account_test(account=account)
    except ProviderError:
        log.warning("new %s account %s failed its first check", provider, account.pk)
    return account
