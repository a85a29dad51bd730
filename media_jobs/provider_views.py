"""Connecting provider accounts with OAuth2 (authorization code): start and callback."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseForbidden
from django.shortcuts import redirect

from accounts.models import Membership
from accounts.roles import can_manage
from media_jobs import connections
from media_jobs.providers.base import ProviderError


@login_required
def oauth_connect(request, kind: str, slug: str):
    """Send an admin to the provider to authorise our app for their workspace."""
    membership = (
        Membership.objects.select_related("workspace")
        .filter(user=request.user, workspace__slug=slug)
        .first()
    )
    if membership is None:
        from django.http import Http404

        raise Http404
    if not can_manage(membership.role):
        return HttpResponseForbidden("Only admins connect provider accounts.")
    try:
        url = connections.oauth_start(
            provider=kind, workspace=membership.workspace, request=request
        )
    except connections.AccountError as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:accounts", slug=slug)
    return redirect(url)


@login_required
def oauth_callback(request, kind: str):
    """Finish the OAuth2 flow: 403 on a state we did not send, the provider's error shown."""
    pending = request.session.get(connections.SESSION_KEY) or {}
    workspace_id = pending.get("workspace")
    membership = (
        Membership.objects.select_related("workspace")
        .filter(user=request.user, workspace_id=workspace_id)
        .first()
    )
    if request.GET.get("error"):
        request.session.pop(connections.SESSION_KEY, None)
        text = request.GET.get("error_description") or request.GET["error"]
        messages.error(request, f"The provider did not connect the account: {text}")
        return (
            redirect("dashboard:accounts", slug=membership.workspace.slug)
            if membership
            else redirect("dashboard:home")
        )
    try:
        account = connections.oauth_finish(
            provider=kind,
            request=request,
            code=request.GET.get("code", ""),
            state=request.GET.get("state", ""),
        )
    except connections.StateMismatch:
        return HttpResponseForbidden("The OAuth2 state does not match; start the connection again.")
    except ProviderError as exc:
        messages.error(request, exc.message)
        return (
            redirect("dashboard:accounts", slug=membership.workspace.slug)
            if membership
            else redirect("dashboard:home")
        )
    if membership is None or not can_manage(membership.role):
        account.delete()
        return HttpResponseForbidden("Only admins connect provider accounts.")
    messages.success(request, f"Connected {account.label} ({account.identity or 'account'}).")
    return redirect("dashboard:accounts", slug=membership.workspace.slug)
